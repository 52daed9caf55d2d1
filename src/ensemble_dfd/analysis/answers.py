"""The report's answers, pure given the stack's comparison table (and claims.json when the
stack step wrote one) and the degradation study's results:

1. does any ensemble beat the best single model, on which evaluation splits, with CIs;
2. what blur, downscaling (size) and JPEG compression do to the detectors.

The rule for 1, each split's power and the headline sentence belong to `ensemble_dfd.stacking.power`
(the stack step writes them to claims.json): this module takes them from claims.json when
present, else asks power.py to derive them from comparison.csv, and only presents them. A
comparison table without `mdd_acc` (written before the stack step computed it) has no known
split power: the answer says so and asks to re-run `stack`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd.rundir import FIT_SPLIT, OOF_SPLIT
from ensemble_dfd.stacking import power

DEFAULT_MIN_EFFECT = power.DEFAULT_MIN_EFFECT
NOT_EVALUATION = (FIT_SPLIT, OOF_SPLIT)
QUESTION = "Does any ensemble beat the best single model?"


@dataclass(frozen=True)
class Answer:
    """One question of the report, answered in a sentence with its evidence.

    verdict: "yes" | "no" | "undecided" (no split large enough, or power unknown) |
    "measured" | "not measured"."""

    key: str
    question: str
    verdict: str
    headline: str
    details: tuple[str, ...] = ()
    table: pd.DataFrame | None = field(default=None, compare=False)


def headline_rows(comparison: pd.DataFrame, level: str = "frame") -> pd.DataFrame:
    """power.headline_rows of one level, evaluation splits only."""
    df = power.headline_rows(comparison, level)
    return df[~df["split"].isin(NOT_EVALUATION)]


@dataclass(frozen=True)
class SplitInfo:
    """One evaluation split's size and power as power.split_power / claims.json state it
    (mdd_acc NaN and large_enough None when unknown)."""

    split: str
    n: int
    n_groups: int
    mdd_acc: float
    large_enough: bool | None

    def describe(self) -> str:
        return f"{self.split} ({self.n} faces, {self.n_groups} groups)"


def _power_known(comparison: pd.DataFrame) -> bool:
    return "mdd_acc" in comparison.columns


def stack_claims(comparison: pd.DataFrame, claims: Mapping[str, Any] | None = None,
                 min_effect: float = DEFAULT_MIN_EFFECT) -> dict[str, Any] | None:
    """claims.json's content: as given, else power.claims on `comparison`; None when the
    table has no `mdd_acc` (split power unknown)."""
    if claims:
        return dict(claims)
    if not _power_known(comparison):
        return None
    table = comparison if "mdd_auc" in comparison.columns else comparison.assign(
        mdd_auc=math.nan)
    frame = headline_rows(table)
    best = str(frame["vs"].iloc[0]) if "vs" in frame.columns and len(frame) else "—"
    return power.claims(table, best, min_effect, exclude=NOT_EVALUATION)


def _infos(comparison: pd.DataFrame, claims: Mapping[str, Any] | None) -> list[SplitInfo]:
    if claims is not None:
        return [SplitInfo(str(s), int(i["n"]), int(i["n_groups"]),
                          float(i.get("mdd_acc", math.nan)), bool(i["large_enough"]))
                for s, i in claims.get("splits", {}).items()]
    sizes = power.split_power(comparison.assign(mdd_acc=math.nan, mdd_auc=math.nan),
                              NOT_EVALUATION)
    return [SplitInfo(s, i["n"], i["n_groups"], math.nan, None) for s, i in sizes.items()]


def evaluation_splits(comparison: pd.DataFrame, claims: Mapping[str, Any] | None = None,
                      min_effect: float = DEFAULT_MIN_EFFECT
                      ) -> tuple[str, float, list[SplitInfo]]:
    """The best single model, the minimum effect of interest and each evaluation split's
    size and power (claims.json's, else power.py's on `comparison`)."""
    c = stack_claims(comparison, claims, min_effect)
    frame = headline_rows(comparison)
    best = str((c or {}).get("best_single") or (
        frame["vs"].iloc[0] if "vs" in frame.columns and len(frame) else "—"))
    return best, float((c or {}).get("min_effect", min_effect)), _infos(comparison, c)


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
            else f"{100 * i.mdd_acc:.1f}",
            f"large enough (≤ {100 * min_effect:g} pts)": "unknown" if i.large_enough is None
            else "yes" if i.large_enough else "no",
            "top ensemble": name, "ΔACC pts [95% CI]": fmt_delta(top, "acc", True),
            "ΔAUC [95% CI]": fmt_delta(top, "auc", False)}
            | ({"video ΔACC pts": fmt_delta(vid, "acc", True),
                "video ΔAUC": fmt_delta(vid, "auc", False)} if len(video) else {})
            | {"CI above 0 (ACC)": (", ".join(wins) or "none") if len(wins) <= 3
               else f"{len(wins)} of {len(ens)} ensembles"})
    return pd.DataFrame(out)


def _verdict(claims: Mapping[str, Any], ensembles: list[str]
             ) -> tuple[str, dict[str, dict[str, Any]]]:
    """yes / no / undecided from claims.json's splits and predictors (ensembles only)."""
    stated = claims.get("predictors", {})
    verdicts = {n: stated[n] for n in ensembles if n in stated}
    if any(v.get("beats_best") for v in verdicts.values()):
        return "yes", verdicts
    large = any(i.get("large_enough") for i in claims.get("splits", {}).values())
    return ("no" if large else "undecided"), verdicts


def _details(frame: pd.DataFrame, video: pd.DataFrame, infos: list[SplitInfo],
             verdicts: dict[str, dict[str, Any]]) -> list[str]:
    out = []
    for i in infos:
        ens = frame[(frame["split"] == i.split) & (frame["kind"] == "ensemble")]
        if not len(ens):
            continue
        top = ens.loc[ens["d_acc"].astype(float).idxmax()]
        name = str(top["predictor"])
        size = ("power unknown" if i.large_enough is None
                else "large enough" if i.large_enough else "too small") + (
            f", detects ≥ {100 * i.mdd_acc:.1f} pts" if np.isfinite(i.mdd_acc) else "")
        line = (f"{i.describe()}, {size}: best ensemble {name} ΔACC "
                f"{fmt_delta(top, 'acc', True)} pts, ΔAUC {fmt_delta(top, 'auc', False)}")
        vid = _row(video, i.split, name) if len(video) else None
        if vid is not None:
            line += (f"; video level ΔACC {fmt_delta(vid, 'acc', True)} pts, ΔAUC "
                     f"{fmt_delta(vid, 'auc', False)}")
        out.append(line + ".")
    for name, v in verdicts.items():
        if v.get("supported_on") and not v.get("beats_best"):
            out.append(f"{name}: CI above 0 on {', '.join(v['supported_on'])} but not on "
                       f"{', '.join(v['not_supported_on'])}.")
    return out


def answers(comparison: pd.DataFrame, claims: Mapping[str, Any] | None = None,
            min_effect: float = DEFAULT_MIN_EFFECT) -> list[Answer]:
    """The stack comparison's answers (today one: does any ensemble beat the best single
    model). The verdicts, split power and headline are `claims` (stack/claims.json) when
    given, else power.claims on `comparison`."""
    missing = {"split", "predictor", "kind", "d_acc", "d_acc_lo", "d_acc_hi", "n",
               "n_groups"} - set(comparison.columns)
    if missing:
        raise ValueError(f"comparison table lacks column(s) {', '.join(sorted(missing))}")
    c = stack_claims(comparison, claims, min_effect)
    best, min_effect, infos = evaluation_splits(comparison, c, min_effect)
    frame = headline_rows(comparison, "frame")
    video = headline_rows(comparison, "video")
    table = _split_table(frame, video, infos, min_effect)
    if c is None:
        return [Answer("ensembles", QUESTION, "undecided",
                       "The split power is unknown: stack/comparison.csv has no mdd_acc "
                       "column (written before the stack step computed it); re-run "
                       "`python -m ensemble_dfd.stack --overwrite` to tell whether an "
                       f"ensemble beats the best single model ({best}).",
                       tuple(_details(frame, video, infos, {})), table)]
    ensembles = list(dict.fromkeys(frame.loc[frame["kind"] == "ensemble", "predictor"]))
    verdict, verdicts = _verdict(c, [str(n) for n in ensembles])
    headline = str(c.get("headline") or power.headline(best, c.get("splits", {}),
                                                        c.get("predictors", {})))
    return [Answer("ensembles", QUESTION, verdict, headline,
                   tuple(_details(frame, video, infos, verdicts)), table)]


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
