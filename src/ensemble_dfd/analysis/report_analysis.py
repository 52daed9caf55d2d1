"""The report's analysis, pure given its inputs: per split, the per-image disagreement table,
hard images, diversity and blur/size attribution, with headline findings in sentences."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ensemble_dfd.analysis import attribution as A
from ensemble_dfd.analysis import disagreement as D
from ensemble_dfd.rundir import FIT_SPLIT, OOF_SPLIT, Run
from ensemble_dfd.stacking.logits import LogitMatrix

PROPERTIES = ("width", "height", "area", "blur", "jpeg_quality", "brightness", "contrast")


def learner_scores(run: Run, split: str, mat: LogitMatrix,
                   warn: Callable[[str], None] | None = None) -> dict[str, np.ndarray]:
    """Each meta-learner's logits on the split's rows: from stack/predictions.parquet
    (out-of-fold on validation), else by applying the saved learner to the stored logits
    (a split collected after stacking, e.g. wild)."""
    stack = run.stack
    if stack is None or not stack.learners:
        return {}
    key = OOF_SPLIT if split == FIT_SPLIT else split
    out: dict[str, np.ndarray] = {}
    p = run.predictions()
    if p is not None and key in set(p["split"]):
        part = p[p["split"] == key].drop_duplicates("path").set_index("path")
        if set(mat.paths) <= set(part.index):
            for name in stack.learners:
                if name in part.columns:
                    out[name] = part.loc[mat.paths, name].to_numpy(dtype=np.float64)
            return out
    if split == FIT_SPLIT:
        return out  # in-sample scores would flatter the learners: leave them out
    for name, lm in run.load_learners(mat.models, stack.learners, warn).items():
        X = np.column_stack([mat.X[:, mat.models.index(m)] for m in lm.models])
        out[name] = lm.decision(X)
    return out


def split_props(images: pd.DataFrame | None, split: str, paths: np.ndarray) -> pd.DataFrame:
    """Per-image properties (and source) in the matrix's row order; NaN where unknown."""
    cols = ["source", *PROPERTIES]
    if images is None:
        return pd.DataFrame({"source": [""] * len(paths)} | {c: np.nan for c in PROPERTIES},
                            index=pd.Index(paths, name="path"))
    part = images[images["split"] == split].drop_duplicates("path").set_index("path")
    out = part.reindex(paths)[[c for c in cols if c in part.columns]].copy()
    if "source" not in out:
        out["source"] = ""
    out["source"] = out["source"].fillna("").astype(str)
    for c in PROPERTIES:
        if c not in out:
            out[c] = np.nan
        out[c] = pd.to_numeric(out[c], errors="coerce")
    if out["area"].isna().all() and out["width"].notna().any():
        out["area"] = out["width"] * out["height"]
    out.index.name = "path"
    return out[cols]


@dataclass
class SplitResult:
    split: str
    per_image: pd.DataFrame
    hard: pd.DataFrame
    thresholds: D.HardThresholds
    diversity: D.Diversity
    bins: pd.DataFrame
    ranks: pd.DataFrame
    logistic: pd.DataFrame
    has_props: bool
    findings: list[str]


def analyse_split(split: str, mat: LogitMatrix, props: pd.DataFrame,
                  learners: dict[str, np.ndarray], thresholds: dict[str, float],
                  best: str | None, primary: str | None, hard_thr: D.HardThresholds,
                  n_bins: int) -> SplitResult:
    models = list(mat.models)
    table = D.per_image_table(mat.paths, mat.y, mat.X, models, thresholds, learners,
                              props["source"].tolist())
    hard = D.hard_images(table, models, hard_thr, best if best in models else None, props)
    div = D.diversity(mat.X, mat.y, models, thresholds)
    wrong = {m: ~D.correct_matrix(mat.X[:, [k]], mat.y, [m], thresholds)[:, 0]
             for k, m in enumerate(models)}
    wrong |= {n: (z > thresholds.get(n, 0.0)) != (mat.y == 1) for n, z in learners.items()}
    kinds = {m: "single" for m in models} | {n: "ensemble" for n in learners}
    have = [c for c in PROPERTIES if props[c].notna().any()]
    if have:
        bins = A.error_by_bin(props, wrong, have, n_bins, kinds)
        ranks = A.rank_tests(props, wrong, have, kinds)
        sources = props["source"].tolist() if props["source"].nunique() > 1 else None
        logistic = A.logistic_attribution(props, wrong, mat.y, sources, kinds)
    else:
        bins = pd.DataFrame(columns=A.BIN_COLUMNS)
        ranks = pd.DataFrame(columns=A.RANK_COLUMNS)
        logistic = pd.DataFrame(columns=A.LOGIT_COLUMNS)
    res = SplitResult(split, table, hard, hard_thr, div, bins, ranks, logistic, bool(have), [])
    res.findings = split_findings(res, best, primary)
    return res


def _pct(v: float) -> str:
    return "—" if not np.isfinite(v) else f"{100 * v:.1f}%"


def split_findings(r: SplitResult, best: str | None, primary: str | None) -> list[str]:
    """Headline sentences with numbers (also written to summary.json)."""
    s = r.diversity.summary
    n_real_hard = int((r.hard["label"] == 1).sum())
    n_fake_hard = int((r.hard["label"] == 0).sum())
    out = [f"{r.split}: {s['n_images']} images ({s['n_real']} real, {s['n_fake']} fake), "
           f"{s['n_models']} models. Oracle accuracy (some model right) "
           f"{_pct(s['oracle_accuracy'])}; majority vote {_pct(s['majority_accuracy'])}; "
           f"best model {_pct(s['best_model_accuracy'])}; every model wrong on "
           f"{_pct(s['all_wrong_share'])} of images.",
           f"{r.split}: hard images (reals wrong for >= {100 * r.thresholds.real:.0f}% of "
           f"models, fakes >= {100 * r.thresholds.fake:.0f}%): {n_real_hard} of {s['n_real']} "
           f"reals, {n_fake_hard} of {s['n_fake']} fakes"
           + (f"; the best single model ({best}) was wrong on "
              f"{int(r.hard['best_wrong'].fillna(False).sum())} of them" if best else "") + ".",
           f"{r.split}: mean pairwise disagreement {s['mean_disagreement']:.3f}, Yule's Q "
           f"{s['mean_yule_q']:.3f}, double fault {s['mean_double_fault']:.3f}, kappa "
           f"{s['mean_kappa']:.3f}, logit correlation {s['mean_logit_corr']:.3f}."]
    if not r.has_props:
        return out
    rk = r.ranks[r.ranks["kind"] == "single"]
    meaning = {"blur": "wrong images are blurrier", "area": "wrong images are smaller"}
    for prop in ("blur", "area"):
        sub = rk[rk["property"] == prop]
        if sub.empty:
            continue
        sig = sub[sub["p"] < 0.05]
        out.append(f"{r.split}: {prop}: misclassified vs correct (Mann-Whitney, per model): "
                   f"median rank-biserial r = {sub['rank_biserial'].median():.3f} "
                   f"(r < 0: {meaning[prop]}); p < 0.05 for {len(sig)} of "
                   f"{len(sub)} models ({int((sig['rank_biserial'] < 0).sum())} lower, "
                   f"{int((sig['rank_biserial'] > 0).sum())} higher).")
    for who in [p for p in (primary, best) if p]:
        b = r.bins[(r.bins["predictor"] == who)]
        for prop in ("blur", "area"):
            g = b[b["property"] == prop]
            if len(g) >= 2:
                lo, hi = g.iloc[0], g.iloc[-1]
                out.append(f"{r.split}: {who}: error rate in the lowest {prop} bin "
                           f"({lo['lo']:.3g}–{lo['hi']:.3g}) {_pct(lo['error_rate'])} "
                           f"[{_pct(lo['ci_lo'])}, {_pct(lo['ci_hi'])}] vs highest "
                           f"({hi['lo']:.3g}–{hi['hi']:.3g}) {_pct(hi['error_rate'])} "
                           f"[{_pct(hi['ci_lo'])}, {_pct(hi['ci_hi'])}].")
        lg = r.logistic[(r.logistic["predictor"] == who)
                        & r.logistic["term"].isin(["log_blur", "log_area"])]
        for _, row in lg.iterrows():
            out.append(f"{r.split}: {who}: logistic regression of wrong: {row['term']} "
                       f"odds ratio per SD {row['odds_ratio']:.2f} (coef {row['coef']:.2f} "
                       f"[{row['ci_lo']:.2f}, {row['ci_hi']:.2f}], p = {row['p']:.3g}).")
    return out


def intervention_findings(res: pd.DataFrame, best: str | None, primary: str | None
                          ) -> list[str]:
    out = []
    for (split, deg), g in res.groupby(["split", "degradation"], sort=False):
        top = int(g["level"].max())
        for who in [p for p in (best, primary) if p]:
            a = g[g["predictor"] == who].set_index("level")
            if a.empty or top == 0:
                continue
            v = a.loc[top, "value"]
            out.append(f"{split}: {deg} ({a.loc[top, 'unit']} {v:g}): {who} accuracy "
                       f"{a.loc[0, 'acc']:.3f} -> {a.loc[top, 'acc']:.3f}, AUC "
                       f"{a.loc[0, 'auc']:.3f} -> {a.loc[top, 'auc']:.3f}.")
        singles = g[g["kind"] == "single"]
        d = (singles[singles["level"] == top].set_index("predictor")["acc"]
             - singles[singles["level"] == 0].set_index("predictor")["acc"])
        if top and len(d):
            out.append(f"{split}: {deg}: base models' accuracy change at the strongest level: "
                       f"median {d.median():+.3f} (range {d.min():+.3f} to {d.max():+.3f}; "
                       f"{int((d < 0).sum())} of {len(d)} models lose accuracy).")
    return out
