"""Grouped folds and honest out-of-fold predictions for meta-learners."""

from __future__ import annotations

import inspect

import numpy as np
from sklearn.base import clone

from ensemble_dfd.ensemble.base import MetaLearnerError
from ensemble_dfd.stacking.metrics import group_codes


def grouped_folds(y: np.ndarray, groups: np.ndarray, n_splits: int = 5, seed=None
                  ) -> list[tuple[np.ndarray, np.ndarray]]:
    """Class-balanced folds in which no group (video) appears on both sides of a split.

    Each group goes, largest first, to the fold holding fewest images of the group's
    majority class (a greedy version of StratifiedGroupKFold, which is too slow with
    thousands of groups). Uses fewer folds when there are fewer groups; needs two."""
    y = np.asarray(y).astype(np.int64)
    codes, n_groups = group_codes(groups)
    if codes.size != y.size:
        raise MetaLearnerError(f"groups has {codes.size} entries for {y.size} labels")
    k = min(int(n_splits), n_groups)
    if k < 2:
        raise MetaLearnerError(f"grouped cross-validation needs at least 2 groups, got "
                               f"{n_groups}")
    size = np.bincount(codes, minlength=n_groups)
    npos = np.bincount(codes, weights=y, minlength=n_groups)
    major = (2 * npos >= size).astype(np.int64)
    rng = np.random.default_rng(0 if seed is None else seed)
    order = rng.permutation(n_groups)
    order = order[np.argsort(-size[order], kind="stable")]
    load = np.zeros((k, 2))
    fold_of = np.empty(n_groups, dtype=np.int64)
    for g in order.tolist():
        c = major[g]
        # fewest images of this class; ties to the fold with fewest images overall
        cand = np.flatnonzero(load[:, c] == load[:, c].min())
        f = int(cand[np.argmin(load[cand].sum(axis=1))])
        fold_of[g] = f
        load[f, 1] += npos[g]
        load[f, 0] += size[g] - npos[g]
    row_fold = fold_of[codes]
    folds = []
    for f in range(k):
        te = np.flatnonzero(row_fold == f)
        if te.size:
            folds.append((np.flatnonzero(row_fold != f), te))
    return folds


def _accepts_groups(estimator) -> bool:
    try:
        return "groups" in inspect.signature(estimator.fit).parameters
    except (TypeError, ValueError):
        return False


def oof_decision(estimator, X: np.ndarray, y: np.ndarray, groups: np.ndarray,
                 n_splits: int = 5, seed=None,
                 folds: list[tuple[np.ndarray, np.ndarray]] | None = None
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold logits: each row is scored by a clone fit on other groups only.

    Returns (logits, fold id per row). Groups are passed on to learners that take them, so
    their own inner CV (e.g. choosing C) is grouped too."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    groups = np.asarray(groups)
    if folds is None:
        folds = grouped_folds(y, groups, n_splits, seed)
    z = np.full(y.size, np.nan)
    fold_id = np.full(y.size, -1, dtype=np.int64)
    takes_groups = _accepts_groups(estimator)
    for i, (tr, te) in enumerate(folds):
        if np.unique(y[tr]).size < 2:
            raise MetaLearnerError(f"out-of-fold fold {i}: its training part holds one class "
                                   "only (too few groups per class for grouped CV)")
        est = clone(estimator)
        if takes_groups:
            est.fit(X[tr], y[tr], groups=groups[tr])
        else:
            est.fit(X[tr], y[tr])
        z[te] = est.decision_function(X[te])
        fold_id[te] = i
    if np.isnan(z).any():
        raise MetaLearnerError("folds did not cover every row")
    return z, fold_id
