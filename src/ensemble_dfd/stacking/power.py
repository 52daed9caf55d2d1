"""Power of the paired grouped bootstrap, and the claim rule built on it (pure).

The minimum detectable difference (MDD) of a comparison is the smallest true difference the
two-sided 5% test (the 95% CI of the paired difference excluding 0) finds with 80% power:

    mdd = (z_{0.975} + z_{0.80}) * SE,   SE = standard deviation over the group resamples of
                                          (metric of predictor - metric of best single model)

(normal approximation: if the estimate is ~N(d, SE^2), it lands beyond 1.96 SE with
probability 0.8 when d = (1.96 + 0.84) SE = 2.80 SE). It is computed on the same resamples
as the CIs, for every split/level/source row; a split's figure is the median over its
ensembles (each ensemble's SE depends on how correlated it is with the best single model).

The claim rule: a predictor "beats the best single model" only if, on EVERY evaluation split
large enough to tell (frame level, all sources, mdd_acc <= min_effect; the fit split and its
out-of-fold rows do not count), the lower bound of its ΔACC CI is above 0, and at least one
such split exists.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import norm

ALPHA = 0.05
POWER = 0.80
Z_SUM = float(norm.ppf(1 - ALPHA / 2) + norm.ppf(POWER))  # 2.8016
DEFAULT_MIN_EFFECT = 0.03


def mdd(diff_samples: np.ndarray | None) -> float:
    """(z_.975 + z_.8) x the bootstrap SE of a paired difference; NaN without resamples or
    when the difference never varies."""
    if diff_samples is None:
        return float("nan")
    v = np.asarray(diff_samples, dtype=np.float64)
    v = v[np.isfinite(v)]
    sd = float(np.std(v, ddof=1)) if v.size > 1 else 0.0
    # SE 0: the two predict the same on every resample (e.g. an ensemble that picked the
    # best model alone); no difference is testable, so no figure
    return Z_SUM * sd if sd > 0 else float("nan")


def headline_rows(table: pd.DataFrame, level: str = "frame") -> pd.DataFrame:
    """The rows claims are judged on: one level (frame by default), all sources. A table
    without the level or source column, or a row with it empty, counts as frame level, all
    sources."""
    keep = np.ones(len(table), dtype=bool)
    if "level" in table.columns:
        keep &= (table["level"].fillna("frame").astype(str) == level).to_numpy()
    elif level != "frame":
        keep[:] = False
    if "source" in table.columns:
        keep &= (table["source"].fillna("all").astype(str) == "all").to_numpy()
    return table[keep]


def split_power(table: pd.DataFrame, exclude: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Per evaluation split: size, the split's MDDs (median over ensembles) and whether it is
    large enough (filled in by `claims`)."""
    out: dict[str, dict[str, Any]] = {}
    for split, part in headline_rows(table).groupby("split", sort=False):
        if split in exclude:
            continue
        ens = part[part["kind"] == "ensemble"]
        src = ens if len(ens) else part[part["predictor"] != part["vs"]]
        out[str(split)] = {
            "level": "frame", "n": int(part["n"].iloc[0]),
            "n_groups": int(part["n_groups"].iloc[0]),
            "mdd_acc": _median(src["mdd_acc"]), "mdd_auc": _median(src["mdd_auc"])}
    return out


def _median(s: pd.Series) -> float:
    v = pd.to_numeric(s, errors="coerce").dropna()
    return float(v.median()) if len(v) else float("nan")


def claims(table: pd.DataFrame, best: str, min_effect: float = DEFAULT_MIN_EFFECT,
           exclude: tuple[str, ...] = ("validation", "validation_oof")) -> dict[str, Any]:
    """stack/claims.json: per split its power, per predictor whether it beats `best`."""
    splits = split_power(table, exclude)
    for info in splits.values():
        info["large_enough"] = bool(np.isfinite(info["mdd_acc"])
                                    and info["mdd_acc"] <= min_effect)
    large = [s for s, i in splits.items() if i["large_enough"]]
    small = [s for s, i in splits.items() if not i["large_enough"]]
    rows = headline_rows(table)
    predictors: dict[str, dict[str, Any]] = {}
    for name in dict.fromkeys(rows["predictor"]):
        if name == best:
            continue
        mine = rows[rows["predictor"] == name].set_index("split")
        ok = [s for s in large if s in mine.index and float(mine.loc[s, "d_acc_lo"]) > 0]
        predictors[str(name)] = {
            "kind": str(mine["kind"].iloc[0]), "beats_best": bool(large) and len(ok) == len(large),
            "supported_on": ok, "not_supported_on": [s for s in large if s not in ok],
            "too_small": small}
    return {"best_single": best, "min_effect": min_effect, "splits": splits,
            "predictors": predictors, "headline": headline(best, splits, predictors)}


def _too_small_text(splits: dict[str, dict[str, Any]]) -> str:
    small = [f"{s} ({i['n']} faces, {i['n_groups']} groups; can detect ΔACC >= "
             f"{i['mdd_acc']:.3f})" for s, i in splits.items() if not i["large_enough"]]
    return "; too small: " + ", ".join(small) if small else ""


def headline(best: str, splits: dict[str, dict[str, Any]],
             predictors: dict[str, dict[str, Any]]) -> str:
    """One sentence: does any ensemble beat the best single model, and where we cannot tell."""
    large = [s for s, i in splits.items() if i["large_enough"]]
    small = _too_small_text(splits)
    if not large:
        return (f"No evaluation split is large enough to tell whether an ensemble beats the "
                f"best single model ({best}){small}.")
    winners = [n for n, p in predictors.items() if p["kind"] == "ensemble" and p["beats_best"]]
    where = ", ".join(large)
    if winners:
        return (f"{', '.join(winners)} beat{'s' if len(winners) == 1 else ''} the best single "
                f"model ({best}) on every evaluation split large enough to tell ({where})"
                f"{small}.")
    return (f"No ensemble beats the best single model ({best}) on every evaluation split "
            f"large enough to tell ({where}){small}.")
