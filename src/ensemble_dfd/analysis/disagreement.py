"""Per-image disagreement between models and pairwise diversity: what the study did by hand
for ten models on 200 images, for any number of models and images.

Pure numpy/pandas. Conventions as everywhere in the package: labels 1 = Real (positive),
0 = Fake; a model calls an image Real iff its logit > its threshold (0 = sigmoid 0.5), so a
real image is TP (right) or FN (wrong), a fake TN (right) or FP (wrong).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
import pandas as pd

PAIR_MEASURES = ("disagreement", "yule_q", "double_fault", "kappa", "logit_corr")
PAIR_COLUMNS = ["model_a", "model_b", "n", "both_right", "a_only_right", "b_only_right",
                "both_wrong", *PAIR_MEASURES]


# ---------------------------------------------------------------------------------------
# decisions and outcomes


def _check_matrix(X: np.ndarray, y: np.ndarray, models: Sequence[str]) -> tuple[np.ndarray,
                                                                                 np.ndarray]:
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise ValueError(f"logits {X.shape} must be (images x models) with one label per "
                         f"image, got labels {y.shape}")
    if X.shape[1] != len(models):
        raise ValueError(f"{X.shape[1]} logit columns but {len(models)} model names")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"empty logit matrix {X.shape}")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (Fake) or 1 (Real)")
    return X, y.astype(np.int64)


def _threshold_vector(models: Sequence[str], thresholds: Mapping[str, float] | None
                      ) -> np.ndarray:
    thresholds = thresholds or {}
    return np.array([float(thresholds.get(m, 0.0)) for m in models])


def decisions(X: np.ndarray, models: Sequence[str],
              thresholds: Mapping[str, float] | None = None) -> np.ndarray:
    """(n x m) bool: True where model j calls image i Real (logit > its threshold)."""
    return np.asarray(X, dtype=np.float64) > _threshold_vector(models, thresholds)


def correct_matrix(X: np.ndarray, y: np.ndarray, models: Sequence[str],
                   thresholds: Mapping[str, float] | None = None) -> np.ndarray:
    """(n x m) bool: True where model j is right about image i."""
    X, y = _check_matrix(X, y, models)
    return decisions(X, models, thresholds) == (y[:, None] == 1)


def outcomes(y: np.ndarray, pred_real: np.ndarray) -> np.ndarray:
    """'TP'/'TN'/'FP'/'FN' per entry (Real = positive); pred_real may be 1-D or 2-D."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred_real).astype(bool)
    if pred.ndim == 2:
        y = y[:, None]
    return np.where(y, np.where(pred, "TP", "FN"), np.where(pred, "FP", "TN")).astype(object)


def short_refs(y: np.ndarray) -> np.ndarray:
    """R1, R2, ... for reals and F1, F2, ... for fakes, numbered in row order (as the study
    numbered its test images)."""
    y = np.asarray(y).astype(bool)
    refs = np.empty(y.size, dtype=object)
    refs[y] = [f"R{i + 1}" for i in range(int(y.sum()))]
    refs[~y] = [f"F{i + 1}" for i in range(int((~y).sum()))]
    return refs


# ---------------------------------------------------------------------------------------
# the per-image table and hard images


def per_image_table(paths: Sequence[str], y: np.ndarray, X: np.ndarray, models: Sequence[str],
                    thresholds: Mapping[str, float] | None = None,
                    learners: Mapping[str, np.ndarray] | None = None,
                    sources: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per image: path, label, ref, file, source, one TP/TN/FP/FN column per model,
    n/pct of models right and wrong, then each meta-learner's verdict (same codes).

    `thresholds` maps model and learner names to their logit thresholds (default 0);
    `learners` maps a meta-learner name to its logits for the same rows."""
    X, y = _check_matrix(X, y, models)
    paths = [str(p) for p in paths]
    if len(paths) != y.size:
        raise ValueError(f"{len(paths)} paths for {y.size} images")
    right = correct_matrix(X, y, models, thresholds)
    codes = outcomes(y, decisions(X, models, thresholds))
    m = len(models)
    n_right = right.sum(axis=1)
    table = pd.DataFrame({
        "path": paths,
        "label": y,
        "ref": short_refs(y),
        "file": [PurePosixPath(p).name for p in paths],
        "source": list(sources) if sources is not None else [""] * y.size,
    })
    for j, name in enumerate(models):
        table[name] = codes[:, j]
    table["n_right"] = n_right
    table["n_wrong"] = m - n_right
    table["pct_right"] = 100.0 * n_right / m
    table["pct_wrong"] = 100.0 * (m - n_right) / m
    thresholds = thresholds or {}
    for name, z in (learners or {}).items():
        z = np.asarray(z, dtype=np.float64)
        if z.shape != y.shape:
            raise ValueError(f"meta-learner {name}: {z.shape} scores for {y.size} images")
        if name in table.columns:
            raise ValueError(f"meta-learner name {name!r} clashes with a column of the table")
        table[name] = outcomes(y, z > float(thresholds.get(name, 0.0)))
    return table


@dataclass(frozen=True)
class HardThresholds:
    """An image is hard when at least this share of the models gets it wrong."""

    real: float = 0.8
    fake: float = 0.5

    def __post_init__(self) -> None:
        for name in ("real", "fake"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and 0.0 <= v <= 1.0):
                raise ValueError(f"hard-image threshold for {name}s must be a share in "
                                 f"[0, 1], got {v!r}")


STUDY_THRESHOLDS = HardThresholds(real=0.8, fake=0.5)
WILD_THRESHOLDS = HardThresholds(real=0.5, fake=0.7)


def thresholds_for(split: str) -> HardThresholds:
    """The study's defaults: >=80% / >=50% (reals / fakes) on test, >=50% / >=70% on wild."""
    return WILD_THRESHOLDS if split.lower().startswith("wild") else STUDY_THRESHOLDS


HARD_COLUMNS = ["ref", "path", "file", "source", "label", "class", "pct_wrong", "n_wrong",
                "n_models", "best_model", "best_wrong", "right_models", "width", "height",
                "size", "blur"]


def hard_images(table: pd.DataFrame, models: Sequence[str],
                thresholds: HardThresholds = STUDY_THRESHOLDS, best: str | None = None,
                props: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows of `per_image_table` that at least the threshold share of models got wrong.

    Adds whether the best single model was wrong, which models were right, and the image's
    width x height and blur score from `props` (indexed by path; NaN where unknown).
    Reals first, then fakes; each by share wrong (descending), then ref."""
    models = list(models)
    m = len(models)
    if m == 0:
        raise ValueError("no models")
    right = np.column_stack([table[c].isin(("TP", "TN")).to_numpy() for c in models])
    n_wrong = m - right.sum(axis=1)
    y = table["label"].to_numpy()
    # compare counts, not percentages, so 8 of 10 at 0.8 is never lost to rounding
    need = np.where(y == 1, thresholds.real, thresholds.fake) * m
    hard = n_wrong >= need - 1e-9
    out = table.loc[hard, ["ref", "path", "file", "source", "label", "pct_wrong",
                           "n_wrong"]].copy()
    out["class"] = np.where(out["label"] == 1, "Real", "Fake")
    out["n_models"] = m
    out["best_model"] = best or ""
    if best is not None and best in table.columns:
        out["best_wrong"] = ~table.loc[hard, best].isin(("TP", "TN")).to_numpy()
    else:
        out["best_wrong"] = pd.array([pd.NA] * len(out), dtype="boolean")
    out["right_models"] = [", ".join(mm for mm, r in zip(models, row, strict=True) if r)
                           for row in right[hard]]
    for col in ("width", "height", "blur"):
        if props is not None and col in props.columns:
            out[col] = props[col].reindex(out["path"]).to_numpy()
        else:
            out[col] = np.nan
    out["size"] = [f"{int(w)}x{int(h)}" if np.isfinite(w) and np.isfinite(h) else ""
                   for w, h in zip(out["width"].astype(float), out["height"].astype(float),
                                   strict=True)]
    out = out.assign(_real=-out["label"], _ref=out["ref"].str[1:].astype(int))
    out = out.sort_values(["_real", "pct_wrong", "_ref"], ascending=[True, False, True],
                          kind="stable")
    return out[HARD_COLUMNS].reset_index(drop=True)


# ---------------------------------------------------------------------------------------
# diversity


def pair_counts(correct: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(m x m) counts for every ordered pair of models (i, j): both right, only i right,
    only j right, both wrong (Kuncheva's N11, N10, N01, N00)."""
    C = np.asarray(correct, dtype=bool).astype(np.int64)
    W = 1 - C
    return C.T @ C, C.T @ W, W.T @ C, W.T @ W


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b != 0, a / np.where(b != 0, b, 1.0), np.nan)


def yule_q(correct: np.ndarray) -> np.ndarray:
    """Yule's Q of every pair: (N11 N00 - N10 N01) / (N11 N00 + N10 N01); 1 for identical
    models that each get something right and something wrong, NaN when 0/0."""
    n11, n10, n01, n00 = pair_counts(correct)
    return _ratio(n11 * n00 - n10 * n01, n11 * n00 + n10 * n01)


def disagreement_rate(correct: np.ndarray) -> np.ndarray:
    """Share of images on which exactly one of the two models is right."""
    n11, n10, n01, n00 = pair_counts(correct)
    return _ratio(n10 + n01, n11 + n10 + n01 + n00)


def double_fault(correct: np.ndarray) -> np.ndarray:
    """Share of images both models get wrong (the diagonal is each model's error rate)."""
    n11, n10, n01, n00 = pair_counts(correct)
    return _ratio(n00, n11 + n10 + n01 + n00)


def cohen_kappa(pred_real: np.ndarray) -> np.ndarray:
    """Cohen's kappa between every pair of models' decisions (Real/Fake), as in
    Margineantu & Dietterich's kappa-error diagrams: agreement corrected for chance.
    NaN where chance agreement is 1 (both models always say the same class)."""
    P = np.asarray(pred_real, dtype=bool).astype(np.float64)
    n = P.shape[0]
    po = (P.T @ P + (1 - P).T @ (1 - P)) / n
    p = P.mean(axis=0)
    pe = np.outer(p, p) + np.outer(1 - p, 1 - p)
    return _ratio(po - pe, 1.0 - pe)


def logit_correlation(X: np.ndarray) -> np.ndarray:
    """Pearson correlation of every pair of models' logits (NaN for a constant model)."""
    X = np.asarray(X, dtype=np.float64)
    if X.shape[0] < 2:
        return np.full((X.shape[1], X.shape[1]), np.nan)
    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        r = np.corrcoef(X, rowvar=False)
    return np.atleast_2d(r)


@dataclass(frozen=True)
class Diversity:
    """Every pairwise measure as an (m x m) DataFrame, plus the per-image summaries."""

    models: list[str]
    matrices: dict[str, pd.DataFrame]
    pairs: pd.DataFrame  # one row per unordered pair (PAIR_COLUMNS)
    wrong_counts: pd.DataFrame  # k models wrong -> images (all, real, fake)
    summary: dict[str, float]


def wrong_count_distribution(correct: np.ndarray, y: np.ndarray) -> pd.DataFrame:
    """How many images k models get wrong, for k = 0..m (all images, reals, fakes)."""
    C = np.asarray(correct, dtype=bool)
    y = np.asarray(y).astype(bool)
    m = C.shape[1]
    k = m - C.sum(axis=1)
    n_all = np.bincount(k, minlength=m + 1)
    n_real = np.bincount(k[y], minlength=m + 1)
    n_fake = np.bincount(k[~y], minlength=m + 1)
    return pd.DataFrame({"n_wrong": np.arange(m + 1), "pct_models_wrong":
                         100.0 * np.arange(m + 1) / m, "images": n_all, "real": n_real,
                         "fake": n_fake, "share": n_all / max(1, C.shape[0])})


def diversity(X: np.ndarray, y: np.ndarray, models: Sequence[str],
              thresholds: Mapping[str, float] | None = None) -> Diversity:
    """Pairwise disagreement, Yule's Q, double fault, Cohen's kappa and logit correlation;
    oracle accuracy (some model right) and the distribution of models wrong per image."""
    X, y = _check_matrix(X, y, models)
    models = list(models)
    C = correct_matrix(X, y, models, thresholds)
    P = decisions(X, models, thresholds)
    n11, n10, n01, n00 = pair_counts(C)
    mats = {
        "disagreement": disagreement_rate(C),
        "yule_q": yule_q(C),
        "double_fault": double_fault(C),
        "kappa": cohen_kappa(P),
        "logit_corr": logit_correlation(X),
    }
    frames = {k: pd.DataFrame(v, index=models, columns=models) for k, v in mats.items()}
    iu, ju = np.triu_indices(len(models), k=1)
    pairs = pd.DataFrame({
        "model_a": [models[i] for i in iu], "model_b": [models[j] for j in ju],
        "n": y.size, "both_right": n11[iu, ju], "a_only_right": n10[iu, ju],
        "b_only_right": n01[iu, ju], "both_wrong": n00[iu, ju],
        **{k: v[iu, ju] for k, v in mats.items()},
    })[PAIR_COLUMNS]
    counts = wrong_count_distribution(C, y)

    def mean_pair(name: str) -> float:
        v = mats[name][iu, ju]
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else math.nan

    acc = C.mean(axis=0)
    summary = {
        "n_images": int(y.size), "n_real": int(y.sum()), "n_fake": int(y.size - y.sum()),
        "n_models": len(models),
        "oracle_accuracy": float(C.any(axis=1).mean()),
        "all_wrong_share": float((~C).all(axis=1).mean()),
        "all_right_share": float(C.all(axis=1).mean()),
        "majority_accuracy": float((C.sum(axis=1) * 2 > len(models)).mean()),
        "best_model_accuracy": float(acc.max()),
        "mean_model_accuracy": float(acc.mean()),
        **{f"mean_{k}": mean_pair(k) for k in PAIR_MEASURES},
    }
    return Diversity(models, frames, pairs, counts, summary)
