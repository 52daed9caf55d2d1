"""The report's answers, pure given the stack's comparison table (and claims.json when the
stack step wrote one) and the degradation study's results:

1. does any ensemble beat the best single model, on which evaluation splits, with CIs;
2. what blur, downscaling (size) and JPEG compression do to the detectors.

The rule for 1 is the stack step's (claims.json): a predictor beats the best single model
only if, on EVERY evaluation split large enough to tell (not validation), the 95% CI of its
accuracy difference lies above 0 (frame level, all sources), and at least one such split
exists. A split is large enough when the smallest accuracy difference it can detect
(`mdd_acc`, 80% power, two-sided 5%) is at most `min_effect`. When claims.json is absent the
same answer is derived from comparison.csv; without its `mdd_acc` column the detectable
difference is estimated from the width of the ΔACC intervals: (z.975 + z.8) · SE, with
SE = CI width / (2 · 1.96).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd.rundir import FIT_SPLIT, OOF_SPLIT

DEFAULT_MIN_EFFECT = 0.03
MDD_PER_CI_WIDTH = (1.959964 + 0.841621) / (2 * 1.959964)  # MDD = 2.80 SE; width = 3.92 SE
NOT_EVALUATION = (FIT_SPLIT, OOF_SPLIT)


@dataclass(frozen=True)
class Answer:
    """One question of the report, answered in a sentence with its evidence.

    verdict: "yes" | "no" | "undecided" (no split large enough) | "measured" |
    "not measured"."""

    key: str
    question: str
    verdict: str
    headline: str
    details: tuple[str, ...] = ()
    table: pd.DataFrame | None = field(default=None, compare=False)


def headline_rows(comparison: pd.DataFrame, level: str = "frame") -> pd.DataFrame:
    """Rows of one level over all sources, evaluation splits only. A table without
    `level`/`source` columns (written before they existed) is frame level, all sources;
    so is a row whose level/source is empty."""
    df = comparison
    if "level" in df.columns:
        df = df[df["level"].fillna("frame").astype(str) == level]
    elif level != "frame":
        return df.iloc[:0]
    if "source" in df.columns:
        df = df[df["source"].fillna("all").astype(str) == "all"]
    return df[~df["split"].isin(NOT_EVALUATION)]


def _finite(values: pd.Series) -> np.ndarray:
    v = pd.to_numeric(values, errors="coerce").to_numpy(dtype=float)
    return v[np.isfinite(v)]


def split_mdd(part: pd.DataFrame) -> tuple[float, str]:
    """The split's detectable ΔACC and how it was found ("stated" or "estimated"): the
    median over its ensemble rows of `mdd_acc`, else of the ΔACC CI width times
    MDD_PER_CI_WIDTH."""
    ens = part[part["kind"] == "ensemble"]
    rows = ens if len(ens) else part
    if "mdd_acc" in rows.columns:
        v = _finite(rows["mdd_acc"])
        if v.size:
            return float(np.median(v)), "stated"
    width = (pd.to_numeric(rows["d_acc_hi"], errors="coerce")
             - pd.to_numeric(rows["d_acc_lo"], errors="coerce")).to_numpy(dtype=float)
    width = width[np.isfinite(width) & (width > 0)]
    if width.size:
        return float(np.median(width) * MDD_PER_CI_WIDTH), "estimated"
    return math.nan, "unknown"


@dataclass(frozen=True)
class SplitInfo:
    split: str
    n: int
    n_groups: int
    mdd_acc: float
    mdd_from: str
    large_enough: bool

    def describe(self) -> str:
        return f"{self.split} ({self.n} faces, {self.n_groups} groups)"


def split_infos(rows: pd.DataFrame, best: str, min_effect: float,
                claims: Mapping[str, Any] | None) -> list[SplitInfo]:
    """Size and power of each evaluation split, from claims.json where it has the split."""
    stated = (claims or {}).get("splits", {})
    out = []
    for split, part in rows.groupby("split", sort=False):
        b = part[part["predictor"] == best]
        ref = b.iloc[0] if len(b) else part.iloc[0]
        mdd, how = split_mdd(part)
        c = stated.get(split)
        if c is not None:
            mdd = float(c.get("mdd_acc", mdd))
            how = "stated"
            large = bool(c.get("large_enough", mdd <= min_effect))
            n, n_groups = int(c.get("n", ref["n"])), int(c.get("n_groups", ref["n_groups"]))
        else:
            large = bool(np.isfinite(mdd) and mdd <= min_effect)
            n, n_groups = int(ref["n"]), int(ref["n_groups"])
        out.append(SplitInfo(str(split), n, n_groups, mdd, how, large))
    return out


def _pts(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{100 * v:+.1f}"


def fmt_delta(r: pd.Series | None, metric: str, points: bool) -> str:
    """`+2.8 [−2.9, +8.3]` (points) or `+0.023 [−0.023, +0.071]`; '—' when absent."""
    if r is None or f"d_{metric}" not in r.index:
        return "—"
    v, lo, hi = (float(r[f"d_{metric}{s}"]) if f"d_{metric}{s}" in r.index else math.nan
                 for s in ("", "_lo", "_hi"))
    f = _pts if points else (lambda x: "—" if not np.isfinite(x) else f"{x:+.3f}")
    if not np.isfinite(v):
        return "—"
    return f(v) + (f" [{f(lo)}, {f(hi)}]" if np.isfinite(lo) and np.isfinite(hi) else "")


def _verdicts(rows: pd.DataFrame, infos: list[SplitInfo], claims: Mapping[str, Any] | None
              ) -> dict[str, dict[str, Any]]:
    """Per ensemble: beats (bool), supported_on, not_supported_on, too_small."""
    stated = (claims or {}).get("predictors", {})
    large = [i.split for i in infos if i.large_enough]
    small = [i.split for i in infos if not i.large_enough]
    out = {}
    for name, g in rows[rows["kind"] == "ensemble"].groupby("predictor", sort=False):
        lo = g.set_index("split")["d_acc_lo"].astype(float)
        sup = [s for s in large if s in lo.index and lo[s] > 0]
        v = {"beats_best": bool(large) and len(sup) == len(large), "supported_on": sup,
             "not_supported_on": [s for s in large if s not in sup], "too_small": small}
        if name in stated:
            v |= {k: stated[name][k] for k in v if k in stated[name]}
        out[str(name)] = v
    return out


def _row(rows: pd.DataFrame, split: str, name: str) -> pd.Series | None:
    r = rows[(rows["split"] == split) & (rows["predictor"] == name)]
    return r.iloc[0] if len(r) else None


def _split_table(frame: pd.DataFrame, video: pd.DataFrame, infos: list[SplitInfo],
                 min_effect: float) -> pd.DataFrame:
    """One row per evaluation split: size, power, the ensemble with the largest ΔACC and
    its differences (points of accuracy, AUC units) at frame and video level."""
    out = []
    for i in infos:
        ens = frame[(frame["split"] == i.split) & (frame["kind"] == "ensemble")]
        top = ens.loc[ens["d_acc"].astype(float).idxmax()] if len(ens) else None
        name = str(top["predictor"]) if top is not None else "—"
        vid = _row(video, i.split, name) if len(video) else None
        wins = ens.loc[ens["d_acc_lo"].astype(float) > 0, "predictor"].astype(str).tolist()
        out.append({
            "split": i.split, "faces": i.n, "groups": i.n_groups,
            "detectable ΔACC (pts)": "—" if not np.isfinite(i.mdd_acc)
            else f"{100 * i.mdd_acc:.1f}" + (" (est.)" if i.mdd_from == "estimated" else ""),
            f"large enough (≤ {100 * min_effect:g} pts)": "yes" if i.large_enough else "no",
            "top ensemble": name, "ΔACC pts [95% CI]": fmt_delta(top, "acc", True),
            "ΔAUC [95% CI]": fmt_delta(top, "auc", False)}
            | ({"video ΔACC pts": fmt_delta(vid, "acc", True),
                "video ΔAUC": fmt_delta(vid, "auc", False)} if len(video) else {})
            | {"CI above 0 (ACC)": (", ".join(wins) or "none") if len(wins) <= 3
               else f"{len(wins)} of {len(ens)} ensembles"})
    return pd.DataFrame(out)


def _headline(verdicts: dict[str, dict[str, Any]], infos: list[SplitInfo], best: str,
              min_effect: float) -> tuple[str, str]:
    large = [i.split for i in infos if i.large_enough]
    small = [i.describe() for i in infos if not i.large_enough]
    tail = f"; too small to tell: {', '.join(small)}" if small else ""
    winners = [n for n, v in verdicts.items() if v["beats_best"]]
    if not infos:
        return "undecided", "No evaluation split (other than validation) was scored by stack."
    if winners:
        return "yes", (f"{', '.join(winners)} beat(s) the best single model ({best}) on "
                       f"every evaluation split large enough to tell ({', '.join(large)})"
                       f"{tail}.")
    if not large:
        return "undecided", (f"No evaluation split is large enough to tell whether an "
                             f"ensemble beats the best single model ({best}) by "
                             f"{100 * min_effect:g} accuracy points{tail}.")
    return "no", (f"No ensemble beats the best single model ({best}) on every evaluation "
                  f"split large enough to tell ({', '.join(large)}){tail}.")


def _details(frame: pd.DataFrame, video: pd.DataFrame, infos: list[SplitInfo],
             verdicts: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for i in infos:
        ens = frame[(frame["split"] == i.split) & (frame["kind"] == "ensemble")]
        if not len(ens):
            continue
        top = ens.loc[ens["d_acc"].astype(float).idxmax()]
        name = str(top["predictor"])
        size = ("large enough" if i.large_enough else "too small") + (
            f", detects ≥ {100 * i.mdd_acc:.1f} pts" if np.isfinite(i.mdd_acc) else "")
        line = (f"{i.describe()}, {size}: best ensemble {name} ΔACC "
                f"{fmt_delta(top, 'acc', True)} pts, ΔAUC {fmt_delta(top, 'auc', False)}")
        vid = _row(video, i.split, name) if len(video) else None
        if vid is not None:
            line += (f"; video level ΔACC {fmt_delta(vid, 'acc', True)} pts, ΔAUC "
                     f"{fmt_delta(vid, 'auc', False)}")
        out.append(line + ".")
    for name, v in verdicts.items():
        if v["supported_on"] and not v["beats_best"]:
            out.append(f"{name}: CI above 0 on {', '.join(v['supported_on'])} but not on "
                       f"{', '.join(v['not_supported_on'])}.")
    return out


def evaluation_splits(comparison: pd.DataFrame, claims: Mapping[str, Any] | None = None,
                      min_effect: float = DEFAULT_MIN_EFFECT
                      ) -> tuple[str, float, list[SplitInfo]]:
    """The best single model, the minimum effect of interest and each evaluation split's
    size and power (claims.json's values where it has them)."""
    min_effect = float((claims or {}).get("min_effect", min_effect))
    frame = headline_rows(comparison, "frame")
    best = str((claims or {}).get("best_single") or (
        frame["vs"].iloc[0] if "vs" in frame.columns and len(frame) else "—"))
    return best, min_effect, split_infos(frame, best, min_effect, claims)


def answers(comparison: pd.DataFrame, claims: Mapping[str, Any] | None = None,
            min_effect: float = DEFAULT_MIN_EFFECT) -> list[Answer]:
    """The stack comparison's answers (today one: does any ensemble beat the best single
    model). `claims` (stack/claims.json) wins over what is derived from `comparison` for the
    best single model, min_effect, the splits' power and each predictor's verdict."""
    missing = {"split", "predictor", "kind", "d_acc", "d_acc_lo", "d_acc_hi", "n",
               "n_groups"} - set(comparison.columns)
    if missing:
        raise ValueError(f"comparison table lacks column(s) {', '.join(sorted(missing))}")
    claims = claims or None
    best, min_effect, infos = evaluation_splits(comparison, claims, min_effect)
    frame = headline_rows(comparison, "frame")
    video = headline_rows(comparison, "video")
    verdicts = _verdicts(frame, infos, claims)
    verdict, headline = _headline(verdicts, infos, best, min_effect)
    if claims and claims.get("headline"):
        headline = str(claims["headline"])
    return [Answer("ensembles", "Does any ensemble beat the best single model?", verdict,
                   headline, tuple(_details(frame, video, infos, verdicts)),
                   _split_table(frame, video, infos, min_effect))]


# ---------------------------------------------------------------------------------------
# degradation study

_DEG_WORDS = {"blur": "Blur", "downscale": "Downscaling (size)", "jpeg": "JPEG compression"}


def degradation_answer(inter: pd.DataFrame | None, best: str | None,
                       primary: str | None) -> Answer:
    """What each degradation does at its strongest level to the best single model, the
    primary ensemble and the base models (accuracy and AUC, level 0 = original)."""
    q = "What do blur, size and compression do?"
    if inter is None or inter.empty:
        return Answer("degradation", q, "not measured",
                      "The controlled degradation study was not run "
                      "(--no-intervention, or no images or trained models). The "
                      "observational blur/size attribution is in the details below.")
    lines, heads = [], []
    for (split, deg), g in inter.groupby(["split", "degradation"], sort=False):
        top = int(g["level"].max())
        if top == 0:
            continue
        at = g[g["level"] == top]
        label = (f"{_DEG_WORDS.get(str(deg), str(deg))} ({at['unit'].iloc[0]} = "
                 f"{float(at['value'].iloc[0]):g})")
        parts = []
        for who in dict.fromkeys(p for p in (best, primary) if p):
            a = g[g["predictor"] == who].set_index("level")
            if 0 in a.index and top in a.index:
                parts.append(f"{who} accuracy {a.loc[0, 'acc']:.3f} → {a.loc[top, 'acc']:.3f}"
                             f" (AUC {a.loc[0, 'auc']:.3f} → {a.loc[top, 'auc']:.3f})")
        s = g[g["kind"] == "single"]
        d = (s[s["level"] == top].set_index("predictor")["acc"]
             - s[s["level"] == 0].set_index("predictor")["acc"]).dropna()
        if len(d):
            parts.append(f"base models' accuracy change median {100 * d.median():+.1f} pts "
                         f"({int((d < 0).sum())} of {len(d)} lose)")
            where = f" on {split}" if inter["split"].nunique() > 1 else ""
            heads.append(f"{_DEG_WORDS.get(str(deg), str(deg)).lower()}{where} "
                         f"{100 * d.median():+.1f} pts")
        n = int(g["n"].iloc[0])
        lines.append(f"{split}, {label}, n={n}: " + "; ".join(parts) + ".")
    sizes = ", ".join(f"{s} ({int(g['n'].iloc[0])} images)"
                      for s, g in inter.groupby("split", sort=False))
    headline = (f"At the strongest level tested on {sizes}, median accuracy change of the "
                "base models: " + ", ".join(heads) + ".") if heads else (
        "No degraded level was scored.")
    return Answer("degradation", q, "measured", headline, tuple(lines))
