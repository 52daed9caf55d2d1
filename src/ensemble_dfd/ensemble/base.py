"""Shared plumbing for meta-learners over an (n_images x n_models) logit matrix.

The features are logits of base models that were trained elsewhere, so every learner is an
ordinary scikit-learn classifier on X: `fit(X, y)` learns only how to combine the columns.
Labels follow the study: 1 = Real, 0 = Fake; `decision_function` returns a logit of P(Real).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.validation import check_is_fitted

from ensemble_dfd.errors import UserError
from ensemble_dfd.stacking.metrics import logit, sigmoid

CALIBRATIONS = (None, "temperature", "platt")


class MetaLearnerError(UserError, ValueError):
    """Input a meta-learner cannot fit or score (wrong shape, non-finite, one class)."""


def check_logits(X, n_features: int | None = None) -> np.ndarray:
    """A finite 2-D float matrix (rows images, columns models)."""
    try:
        X = np.asarray(X, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise MetaLearnerError(f"logit matrix is not numeric: {e}") from None
    if X.ndim != 2:
        raise MetaLearnerError(f"logit matrix must be 2-D (images x models), got shape {X.shape}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise MetaLearnerError(f"logit matrix is empty: shape {X.shape}")
    if not np.isfinite(X).all():
        raise MetaLearnerError("logit matrix holds NaN or inf values")
    if n_features is not None and X.shape[1] != n_features:
        raise MetaLearnerError(f"logit matrix has {X.shape[1]} model columns; this learner was "
                               f"fit on {n_features}")
    return X


def check_labels(y, n: int) -> np.ndarray:
    """0/1 labels with both classes present (a combiner cannot be fit on one class)."""
    y = np.asarray(y)
    if y.ndim != 1 or y.shape[0] != n:
        raise MetaLearnerError(f"labels must be 1-D with {n} entries, got shape {y.shape}")
    if not np.isin(y, (0, 1)).all():
        raise MetaLearnerError("labels must be 0 (Fake) or 1 (Real)")
    if np.unique(y).size < 2:
        raise MetaLearnerError(
            f"cannot fit a meta-learner on one class: all {n} labels are "
            f"{'Real' if y[0] == 1 else 'Fake'}; the fit split needs both Real and Fake images")
    return y.astype(np.int64)


def fit_calibration(X: np.ndarray, y: np.ndarray, method: str | None
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Per-model affine maps of the logits, a*x + b, fit by maximum likelihood
    (temperature scaling: b = 0, a = 1/T; Platt scaling: both free)."""
    m = X.shape[1]
    if method is None:
        return np.ones(m), np.zeros(m)
    if method not in CALIBRATIONS:
        raise MetaLearnerError(f"calibration must be one of {CALIBRATIONS}, got {method!r}")
    a, b, _ = _newton_affine(X, y.astype(np.float64), with_bias=method == "platt")
    return a, b


def fit_affine(Z: np.ndarray, y: np.ndarray, start: tuple[float, float] = (1.0, 0.0),
               tol: float = 1e-7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each column's maximum-likelihood affine map a*z + b (Platt scaling, all columns at
    once, Newton steps from `start`); returns (a, b, each column's mean log-loss after it)."""
    yf = y.astype(np.float64)
    return _newton_affine(Z, yf, with_bias=True, tol=tol, start=start)


def _nll_cols(X: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    z = X * a + b
    # log(1 + e^z), stable; ~10x faster than np.logaddexp(0, z), which dominates fits
    softplus = np.maximum(z, 0.0) + np.log1p(np.exp(-np.abs(z)))
    return np.mean(softplus - y[:, None] * z, axis=0)


def _newton_affine(X: np.ndarray, y: np.ndarray, with_bias: bool, max_iter: int = 50,
                   tol: float = 1e-7, start: tuple[float, float] = (1.0, 0.0)
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All columns' 1-D logistic fits at once: damped Newton steps (halved while the loss
    rises), a tiny ridge keeping the 2x2 Hessians invertible on separable columns.
    Returns (a, b, each column's mean log-loss at them)."""
    n, m = X.shape
    a, b = np.full(m, float(start[0])), np.full(m, float(start[1]) if with_bias else 0.0)
    loss = _nll_cols(X, y, a, b)
    ridge = 1e-8
    for _ in range(max_iter):
        p = sigmoid(X * a + b)
        r = p - y[:, None]
        w = p * (1.0 - p)
        ga = np.mean(r * X, axis=0) + ridge * a
        haa = np.mean(w * X * X, axis=0) + ridge
        if with_bias:
            gb = np.mean(r, axis=0)
            hab = np.mean(w * X, axis=0)
            hbb = np.mean(w, axis=0) + ridge
            det = haa * hbb - hab * hab
            da = (hbb * ga - hab * gb) / det
            db = (haa * gb - hab * ga) / det
        else:
            da, db = ga / haa, np.zeros(m)
        step = np.ones(m)
        for _ in range(30):  # backtrack each column until its loss does not rise
            new = _nll_cols(X, y, a - step * da, b - step * db)
            bad = new > loss + 1e-12
            if not bad.any():
                break
            step = np.where(bad, step / 2, step)
        a, b = a - step * da, b - step * db
        loss = new
        if max(np.max(np.abs(step * da)), np.max(np.abs(step * db))) < tol:
            break
    return a, b, loss


class LogitMetaLearner(ClassifierMixin, BaseEstimator):
    """Base class: validation, `classes_`, and predict/predict_proba from decision_function.

    Subclasses implement `_fit(X, y, groups)` and `_decision(X)` (a logit of P(Real))."""

    def fit(self, X, y, groups=None):
        """Learn how to combine the model columns of X (logits) for labels y (1 = Real)."""
        X = check_logits(X)
        y = check_labels(y, X.shape[0])
        if groups is not None:
            groups = np.asarray(groups)
            if groups.shape[0] != X.shape[0]:
                raise MetaLearnerError(f"groups has {groups.shape[0]} entries for "
                                       f"{X.shape[0]} images")
        self.classes_ = np.array([0, 1])
        self.n_features_in_ = X.shape[1]
        self._fit(X, y, groups)
        return self

    def decision_function(self, X) -> np.ndarray:
        """Logit of P(Real) for each row."""
        check_is_fitted(self, "classes_")
        return self._decision(check_logits(X, self.n_features_in_))

    def predict_proba(self, X) -> np.ndarray:
        p = sigmoid(self.decision_function(X))
        return np.column_stack([1.0 - p, p])

    def predict(self, X) -> np.ndarray:
        # same rule as the metrics: logit > 0 (sigmoid > 0.5) means Real
        return (self.decision_function(X) > 0).astype(np.int64)

    def weight_table(self) -> dict[str, np.ndarray | float]:
        """Per-model arrays (and scalars) that explain the fitted combination."""
        check_is_fitted(self, "classes_")
        return {}

    # hooks
    def _fit(self, X: np.ndarray, y: np.ndarray, groups: np.ndarray | None) -> None:
        raise NotImplementedError

    def _decision(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError


def calibrated_probs(X: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Each model's P(Real) after its affine logit calibration."""
    return sigmoid(X * a + b)


def prob_to_logit(p: np.ndarray) -> np.ndarray:
    # clip far from 0/1 so an averaged probability of exactly 0 or 1 stays a finite logit
    return logit(p, eps=1e-12)
