"""The single-vs-ensemble comparison behind `python -m ensemble_dfd.stack` (pure: logit
matrices in, tables out). Meta-learners are fit on the validation split; every predictor is
scored on every other split (out of fold on validation) with grouped-bootstrap CIs, paired
differences and McNemar's exact test against the best single model chosen on validation."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd import metrics as M
from ensemble_dfd.ensemble import (
    MetaLearnerError,
    check_labels,
    grouped_folds,
    make_meta_learner,
    oof_decision,
)
from ensemble_dfd.errors import UserError
from ensemble_dfd.logits import IMAGES_FILE, LogitMatrix, StoreError
from ensemble_dfd.rundir import FIT_SPLIT, OOF_SPLIT, choose_best_single, recommend


class StackError(UserError, ValueError):
    """Input the stack step cannot use (explained in the message)."""


def load_groups(run_dir: Path, mats: dict[str, LogitMatrix]) -> dict[str, np.ndarray]:
    """Group (video) of every image, aligned with each split's matrix rows.

    Without images.parquet (or its `group` column) each image is its own group, with a
    warning: CIs and folds then treat frames of one video as independent."""
    ipath = run_dir / IMAGES_FILE
    if not ipath.is_file():
        warnings.warn(f"{ipath} is absent: using each image's path as its group; CIs and "
                      "out-of-fold folds will treat frames of one video as independent",
                      stacklevel=2)
        return {s: np.asarray(m.paths).astype(str) for s, m in mats.items()}
    img = pd.read_parquet(ipath)
    if "group" not in img.columns:
        warnings.warn(f"{ipath} has no 'group' column: using each image's path as its group",
                      stacklevel=2)
        return {s: np.asarray(m.paths).astype(str) for s, m in mats.items()}
    img = img.drop_duplicates(["split", "path"]).set_index(["split", "path"])["group"]
    out = {}
    for split, m in mats.items():
        idx = pd.MultiIndex.from_arrays([np.full(len(m.paths), split, dtype=object),
                                         np.asarray(m.paths, dtype=object)])
        g = img.reindex(idx)
        if g.isna().any():
            miss = np.asarray(m.paths)[g.isna().to_numpy()]
            raise StoreError(f"{ipath}: no group for {len(miss)} image(s) of split {split}, "
                             f"e.g. {list(miss[:3])}; the per-image table and the logits "
                             "disagree (re-run collect)")
        out[split] = g.astype(str).to_numpy()
    return out


def warn_shared_groups(groups: dict[str, np.ndarray]) -> None:
    fit = set(groups.get(FIT_SPLIT, []))
    for split, g in groups.items():
        if split == FIT_SPLIT:
            continue
        shared = fit & set(g)
        if shared:
            warnings.warn(f"{len(shared)} group(s) appear in both {FIT_SPLIT} and {split} "
                          f"(e.g. {sorted(shared)[:2]}): the {split} estimates are optimistic",
                          stacklevel=2)


@dataclass
class SplitScores:
    """Logit-scale scores of every predictor on one split."""

    split: str
    y: np.ndarray
    groups: np.ndarray
    paths: np.ndarray
    scores: dict[str, np.ndarray]


def evaluate_split(ss: SplitScores, kinds: dict[str, str], thresholds: dict[str, float],
                   best: str, n_boot: int, seed: int, alpha: float = 0.05) -> pd.DataFrame:
    """One row per predictor: counts, metrics, group-bootstrap CIs, paired differences and
    the exact McNemar test against `best` (the best single model chosen on validation)."""
    codes, n_groups = M.group_codes(ss.groups)
    counts = M.bootstrap_counts(n_groups, n_boot, seed) if n_boot > 0 else None
    boot: dict[str, M.BootstrapSamples] = {}
    rows = []
    n_real = int(ss.y.sum())
    one_class = n_real in (0, ss.y.size)
    for name, z in ss.scores.items():
        thr = thresholds[name]
        with warnings.catch_warnings():
            # one warning per split below, not one per predictor
            warnings.simplefilter("ignore", M.OneClassWarning)
            r = M.evaluate(ss.y, z, thr)
        row: dict[str, Any] = {"split": ss.split, "predictor": name, "kind": kinds[name],
                               "threshold": thr, "n": r.pop("n"), "n_groups": n_groups,
                               "n_real": n_real, "n_fake": int(ss.y.size - n_real)}
        row.update(r)
        if counts is not None:
            bs = M.bootstrap_samples(ss.y, z, codes, counts, thr)
            boot[name] = bs
            for m in M.CI_METRICS:
                row[f"{m}_lo"], row[f"{m}_hi"] = bs.ci(m, alpha)
        else:
            for m in M.CI_METRICS:
                row[f"{m}_lo"] = row[f"{m}_hi"] = float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    if one_class:
        warnings.warn(f"split {ss.split} holds only {'Real' if n_real else 'Fake'} images: "
                      "AUC is undefined (NaN) and MCC is 0 by convention", stacklevel=2)
    # paired comparisons with the best single model, on the same resamples
    zb = ss.scores[best]
    right_b = (zb > thresholds[best]) == (ss.y == 1)
    extra = []
    for name, z in ss.scores.items():
        right = (z > thresholds[name]) == (ss.y == 1)
        b, c, p = M.mcnemar_exact(right, right_b)
        e: dict[str, Any] = {"vs": best, "mcnemar_b": b, "mcnemar_c": c, "mcnemar_p": p}
        for m in M.CI_METRICS:
            point = df.loc[df.predictor == name, m].iloc[0] - df.loc[df.predictor == best,
                                                                     m].iloc[0]
            e[f"d_{m}"] = point
            if counts is not None:
                e[f"d_{m}_lo"], e[f"d_{m}_hi"] = M.percentile_ci(
                    getattr(boot[name], m) - getattr(boot[best], m), alpha)
            else:
                e[f"d_{m}_lo"] = e[f"d_{m}_hi"] = float("nan")
        extra.append(e)
    df = pd.concat([df, pd.DataFrame(extra)], axis=1)
    best_hi = float(df.loc[df.predictor == best, "acc_hi"].iloc[0])
    df["beats_best"] = df["d_acc_lo"] > 0
    df["acc_lo_above_best_hi"] = df["acc_lo"] > best_hi
    return df


COLUMNS = ["split", "predictor", "kind", "threshold", "n", "n_groups", "n_real", "n_fake",
           "tp", "tn", "fp", "fn", "acc", "tpr", "tnr", "ppv", "npv", "f1", "mcc", "auc",
           "logloss", "brier", "ece", "acc_lo", "acc_hi", "auc_lo", "auc_hi", "mcc_lo",
           "mcc_hi", "vs", "mcnemar_b", "mcnemar_c", "mcnemar_p", "d_acc", "d_acc_lo",
           "d_acc_hi", "d_auc", "d_auc_lo", "d_auc_hi", "d_mcc", "d_mcc_lo", "d_mcc_hi",
           "beats_best", "acc_lo_above_best_hi"]


@dataclass
class Comparison:
    """Everything the stack step decided and measured (what its writers write)."""

    models: list[str]
    learners: list[str]
    rule: str
    fitted: dict[str, Any]
    thresholds: dict[str, float]
    best: str
    kinds: dict[str, str]
    split_scores: dict[str, SplitScores]
    table: pd.DataFrame
    n_folds: int
    fit: SplitScores  # the fit split (in-sample base-model logits, labels, groups)

    @property
    def recommended(self) -> str | None:
        return recommend(self.table, self.learners)


def fit_learners(learners: list[str], val: LogitMatrix, groups: np.ndarray, n_folds: int,
                 seed: int) -> tuple[dict[str, Any], dict[str, np.ndarray], int]:
    """Fit every meta-learner on the fit split, and score it out of fold (grouped folds)."""
    fitted: dict[str, Any] = {}
    oof: dict[str, np.ndarray] = {}
    folds = grouped_folds(val.y, groups, n_folds, seed)
    for name in learners:
        est = make_meta_learner(name, random_state=seed)
        fitted[name] = est.fit(val.X, val.y, groups=groups)
        oof[name], _ = oof_decision(est, val.X, val.y, groups, folds=folds)
    return fitted, oof, len(folds)


def compare(mats: dict[str, LogitMatrix], groups: dict[str, np.ndarray], learners: list[str],
            rule: str, n_boot: int, n_folds: int, seed: int,
            log: Callable[[str], None] = lambda msg: None) -> Comparison:
    """Fit the meta-learners on FIT_SPLIT, choose thresholds and the best single model there,
    and score every single model and ensemble on every other split (out-of-fold on the fit
    split) with grouped-bootstrap CIs and paired tests against the best single model."""
    val, gval = mats[FIT_SPLIT], groups[FIT_SPLIT]
    models = list(val.models)
    try:
        check_labels(val.y, val.y.size)
    except MetaLearnerError as e:
        raise StackError(f"split {FIT_SPLIT}: {e}") from None
    t0 = time.time()
    fitted, oof, folds = fit_learners(learners, val, gval, n_folds, seed)
    log(f"fitted {len(learners)} meta-learners (+{folds} grouped folds each) "
        f"in {time.time() - t0:.1f}s")
    kinds = {m: "single" for m in models} | {n: "ensemble" for n in learners}
    val_scores = {m: val.X[:, k] for k, m in enumerate(models)} | oof
    thresholds = {n: M.choose_threshold(rule, val.y, z) for n, z in val_scores.items()}
    best = choose_best_single(val.y, val.X, models, thresholds)
    split_scores = {OOF_SPLIT: SplitScores(OOF_SPLIT, val.y, gval, val.paths, val_scores)}
    for s, mat in mats.items():
        if s == FIT_SPLIT:
            continue
        sc = {m: mat.X[:, k] for k, m in enumerate(models)}
        sc |= {n: est.decision_function(mat.X) for n, est in fitted.items()}
        split_scores[s] = SplitScores(s, mat.y, groups[s], mat.paths, sc)
    tables = [evaluate_split(ss, kinds, thresholds, best, n_boot, seed + i)
              for i, ss in enumerate(split_scores.values())]
    table = pd.concat(tables, ignore_index=True)[COLUMNS]
    fit = SplitScores(FIT_SPLIT, val.y, gval, val.paths, {})
    return Comparison(models, learners, rule, fitted, thresholds, best, kinds, split_scores,
                      table, folds, fit)
