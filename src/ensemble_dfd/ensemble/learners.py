"""The meta-learners: voting, weighted voting, stacked logistic regression, Caruana selection.

All take already-trained base models' logits as features (scikit-learn's VotingClassifier
cannot); parameters are validated in `fit`, fitted state ends in `_`.
"""

from __future__ import annotations

import numbers

import numpy as np
from scipy.optimize import minimize
from sklearn.model_selection import StratifiedKFold

from ensemble_dfd.ensemble.base import (
    CALIBRATIONS,
    LogitMetaLearner,
    MetaLearnerError,
    calibrated_probs,
    fit_affine,
    fit_calibration,
    prob_to_logit,
)
from ensemble_dfd.ensemble.cv import grouped_folds
from ensemble_dfd.stacking.logistic import newton_logistic
from ensemble_dfd.stacking.metrics import sigmoid


def _check_calibration(value) -> None:
    if value not in CALIBRATIONS:
        raise MetaLearnerError(f"calibration must be one of {CALIBRATIONS}, got {value!r}")


class _WeightedProbabilities(LogitMetaLearner):
    """Base of the learners whose score is a weighted mean of (calibrated) probabilities:
    subclasses fit `calib_a_`, `calib_b_` and `weights_`."""

    def _decision(self, X):
        return prob_to_logit(calibrated_probs(X, self.calib_a_, self.calib_b_) @ self.weights_)

    def _with_calibration(self, out: dict) -> dict:
        if self.calibration is not None:
            out.update(calib_a=self.calib_a_, calib_b=self.calib_b_)
        return out


class SoftVoting(_WeightedProbabilities):
    """Mean of the models' probabilities (optionally after per-model calibration)."""

    def __init__(self, calibration: str | None = None):
        self.calibration = calibration

    def _fit(self, X, y, groups):
        _check_calibration(self.calibration)
        self.calib_a_, self.calib_b_ = fit_calibration(X, y, self.calibration)
        self.weights_ = np.full(X.shape[1], 1.0 / X.shape[1])


    def weight_table(self):
        return self._with_calibration({"weight": self.weights_})


class HardVoting(LogitMetaLearner):
    """Majority vote of the models' decisions (logit > 0).

    The score is the share of Real votes; a tie (e.g. 5 of 10) is broken by the mean
    probability, through a term smaller than half a vote so it never reorders vote counts
    (and it orders images within a vote count, so ROC curves are not just a few steps)."""

    def __init__(self):
        pass

    def _fit(self, X, y, groups):
        self.weights_ = np.full(X.shape[1], 1.0 / X.shape[1])

    def _decision(self, X):
        k = X.shape[1]
        votes = (X > 0).mean(axis=1)
        tie_break = (sigmoid(X).mean(axis=1) - 0.5) / (2.0 * k)
        # squeeze [-1/4k, 1 + 1/4k] into [0, 1] around 0.5: order and the 0.5 cut survive
        margin = 1.0 / (4.0 * k)
        return prob_to_logit((votes + tie_break + margin) / (1.0 + 2.0 * margin))

    def weight_table(self):
        return {"weight": self.weights_}


class _PooledLogits(LogitMetaLearner):
    """Base of the learners whose score is a rescaled weighted mean of the models' logits,
    z = scale * sum_k w_k x_k + intercept, with w on the simplex (logarithmic opinion
    pooling: the weighted geometric mean of the odds). Subclasses fit `weights_`, `scale_`
    and `intercept_`.

    Pooling logits, not probabilities, with a fitted scale: with models whose errors are
    independent the evidence adds up on the logit scale, while a mean of probabilities is
    never more confident than its members; fitting weights to log-loss at a fixed scale
    then rewards putting the weight on the few most confident models."""

    def _decision(self, X):
        if not hasattr(self, "scale_"):
            raise MetaLearnerError(f"this {type(self).__name__} was saved by an older version "
                                   "(it averaged probabilities); re-run the stack step")
        return self.scale_ * (X @ self.weights_) + self.intercept_

    def _pooled_table(self) -> dict:
        return {"weight": self.weights_, "scale": self.scale_, "intercept": self.intercept_}


class WeightedSoftVoting(_PooledLogits):
    """Weighted mean of the models' logits with a scale and an intercept, all fit jointly by
    maximum likelihood on the fit data: a logistic regression whose coefficients are held
    non-negative (weights = coefficients / their sum, scale = their sum). A model that adds
    nothing gets (close to) zero weight; `l2` (on the mean log-loss) only keeps the scale
    finite when the classes are separable."""

    def __init__(self, max_iter: int = 500, tol: float = 1e-10, l2: float = 1e-6):
        self.max_iter = max_iter
        self.tol = tol
        self.l2 = l2

    def _fit(self, X, y, groups):
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise MetaLearnerError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if not float(self.l2) >= 0.0:
            raise MetaLearnerError(f"l2 must be >= 0, got {self.l2!r}")
        n, m = X.shape
        yf = y.astype(np.float64)
        # start at the equal-weight pool with its best scale and intercept
        a0, b0, _ = fit_affine(X.mean(axis=1, keepdims=True), y)
        start = np.r_[np.full(m, max(float(a0[0]), 0.0) / m), b0[0]]
        A = np.column_stack([X, np.ones(n)])
        pen = np.r_[np.full(m, float(self.l2)), 0.0]

        def loss(theta):
            z = A @ theta
            g = A.T @ (sigmoid(z) - yf) / n + pen * theta
            return float(np.mean(np.logaddexp(0.0, z) - yf * z) + 0.5 * pen @ theta**2), g

        res = minimize(loss, start, jac=True, method="L-BFGS-B",
                       bounds=[(0.0, None)] * m + [(None, None)],
                       options={"maxiter": self.max_iter, "ftol": self.tol, "gtol": 1e-8})
        coef = np.clip(res.x[:m], 0.0, None)
        self.scale_ = float(coef.sum())
        self.weights_ = coef / self.scale_ if self.scale_ > 0 else np.full(m, 1.0 / m)
        self.intercept_ = float(res.x[m])
        self.loss_ = float(res.fun)
        self.n_iter_ = int(res.nit)

    def weight_table(self):
        return self._pooled_table()


def _with_ones(X: np.ndarray) -> np.ndarray:
    return np.column_stack([X, np.ones(X.shape[0])])


def _fit_l2_logistic(A: np.ndarray, y: np.ndarray, C: float, max_iter: int = 100,
                     start: tuple[np.ndarray, float] | None = None, tol: float = 1e-10
                     ) -> tuple[np.ndarray, float, int]:
    """L2-penalised logistic regression (scikit-learn's objective: C * sum of losses +
    ||coef||^2 / 2, intercept unpenalised), by `logistic.newton_logistic`.

    A is the design matrix with a trailing column of ones (see `_with_ones`)."""
    d = A.shape[1] - 1
    theta = None if start is None else np.r_[start[0], start[1]]
    fit = newton_logistic(A, y, np.r_[np.full(d, 1.0 / C), 0.0], max_iter, tol, theta)
    return fit.theta[:d].copy(), float(fit.theta[d]), fit.n_iter


class StackedLogisticRegression(LogitMetaLearner):
    """Logistic regression on the logits; the L2 strength C is chosen by (grouped) CV.

    With `groups` given to fit, the CV folds are grouped (no video in two folds); without,
    stratified folds. The criterion is log-loss; ties go to the smaller C (simpler model).
    On more than `cv_max_rows` images, C is chosen on a random subset of whole groups (the
    penalty matters little at that size and the search dominates the cost); the final fit
    always uses every row."""

    def __init__(self, Cs=10, cv: int = 5, max_iter: int = 100, cv_max_rows: int = 20000,
                 random_state=None):
        self.Cs, self.cv, self.max_iter = Cs, cv, max_iter
        self.cv_max_rows, self.random_state = cv_max_rows, random_state

    def _grid(self) -> np.ndarray:
        if isinstance(self.Cs, numbers.Integral):
            if self.Cs < 1:
                raise MetaLearnerError(f"Cs must be >= 1, got {self.Cs}")
            return np.logspace(-4, 4, int(self.Cs))
        grid = np.sort(np.asarray(self.Cs, dtype=float))
        if grid.ndim != 1 or grid.size == 0 or not (grid > 0).all():
            raise MetaLearnerError(f"Cs must be a positive int or positive floats, got {self.Cs}")
        return grid

    def _fit(self, X, y, groups):
        grid = self._grid()
        if not isinstance(self.max_iter, numbers.Integral) or self.max_iter < 1:
            raise MetaLearnerError(f"max_iter must be a positive int, got {self.max_iter!r}")
        if not isinstance(self.cv, numbers.Integral) or self.cv < 2:
            raise MetaLearnerError(f"cv must be an int >= 2, got {self.cv!r}")
        if grid.size == 1:
            self.C_ = float(grid[0])
            self.cv_loss_ = np.array([np.nan])
        else:
            Xs, ys, gs = self._cv_subset(X, y, groups)
            if gs is not None:
                folds = grouped_folds(ys, gs, self.cv, self.random_state)
            else:
                k = int(min(self.cv, np.bincount(ys).min()))
                if k < 2:
                    raise MetaLearnerError("too few images of one class to choose C by CV")
                folds = list(StratifiedKFold(k, shuffle=True, random_state=self.random_state)
                             .split(Xs, ys))
            loss = np.zeros(grid.size)
            A = _with_ones(Xs)
            y_all, y = y, ys
            for tr, te in folds:
                if np.unique(y[tr]).size < 2:
                    raise MetaLearnerError("a CV training fold holds one class only; "
                                           "too few groups per class")
                Atr, ytr, Ate, yte = A[tr], y[tr], A[te], y[te]
                start = None
                for j, C in enumerate(grid):  # warm-started along the C path: few steps each
                    coef, icpt, _ = _fit_l2_logistic(Atr, ytr, C, self.max_iter, start)
                    start = (coef, icpt)
                    z = Ate[:, :-1] @ coef + icpt
                    loss[j] += np.sum(np.logaddexp(0.0, z) - yte * z)
            self.cv_loss_ = loss / y.size
            self.C_ = float(grid[int(np.argmin(self.cv_loss_))])
            y = y_all
        self.Cs_ = grid
        self.coef_, self.intercept_, self.n_iter_ = _fit_l2_logistic(
            _with_ones(X), y, self.C_, self.max_iter)

    def _cv_subset(self, X, y, groups):
        if not isinstance(self.cv_max_rows, numbers.Integral) or self.cv_max_rows < 2:
            raise MetaLearnerError(f"cv_max_rows must be an int >= 2, got {self.cv_max_rows!r}")
        if X.shape[0] <= self.cv_max_rows:
            return X, y, groups
        rng = np.random.default_rng(self.random_state)
        g = groups if groups is not None else np.arange(X.shape[0])
        uniq, codes = np.unique(g, return_inverse=True)
        keep_share = self.cv_max_rows / X.shape[0]
        keep = rng.random(uniq.size) < keep_share
        rows = np.flatnonzero(keep[codes.ravel()])
        if np.unique(y[rows]).size < 2:
            return X, y, groups
        return X[rows], y[rows], (groups[rows] if groups is not None else None)

    def _decision(self, X):
        return X @ self.coef_ + self.intercept_

    def weight_table(self):
        return {"coef": self.coef_, "intercept": self.intercept_, "C": self.C_}


class CaruanaSelection(_PooledLogits):
    """Greedy ensemble selection with replacement (Caruana et al., ICML 2004) over the
    models' logits.

    Starting from the `n_init` best single models (sorted initialisation), repeatedly add the
    model (repeats allowed) whose inclusion most improves `metric` of the mean logit of the
    selection; the weights are the selection counts. Each candidate is judged after its own
    best scale and intercept (a Platt fit of the mean logit), so the metric rewards how well
    the pool separates the classes, not how confident it happens to be; the final pool is
    rescaled the same way. With `n_bags` > 1, each bag selects from a random
    `bag_fraction` of the models and the counts are summed (Caruana's bagged selection,
    which resists overfitting the fit data)."""

    def __init__(self, n_iter: int = 50, metric: str = "log_loss", n_init: int = 0,
                 n_bags: int = 1, bag_fraction: float = 0.5, random_state=None):
        self.n_iter, self.metric, self.n_init = n_iter, metric, n_init
        self.n_bags, self.bag_fraction = n_bags, bag_fraction
        self.random_state = random_state

    def _check_params(self) -> None:
        if self.metric not in ("log_loss", "accuracy"):
            raise MetaLearnerError(f"metric must be 'log_loss' or 'accuracy', got {self.metric!r}")
        for name in ("n_iter", "n_bags"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or v < 1:
                raise MetaLearnerError(f"{name} must be a positive int, got {v!r}")
        if not isinstance(self.n_init, numbers.Integral) or self.n_init < 0:
            raise MetaLearnerError(f"n_init must be an int >= 0, got {self.n_init!r}")
        if not 0.0 < float(self.bag_fraction) <= 1.0:
            raise MetaLearnerError(f"bag_fraction must be in (0, 1], got {self.bag_fraction!r}")

    def _score(self, Z: np.ndarray, y: np.ndarray, start: tuple[float, float] = (1.0, 0.0)
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Lower is better, for each column of Z (candidate pools' mean logits) after its
        own best scale and intercept (Newton steps from `start`); also returns those.
        Accuracy ties go to log-loss."""
        a, b, nll = fit_affine(Z, y, start, tol=1e-6)
        if self.metric == "log_loss":
            return nll, a, b
        err = np.mean((Z * a + b > 0) != y[:, None].astype(bool), axis=0)
        return err + 1e-6 * nll / (1.0 + nll), a, b

    def _select(self, X: np.ndarray, y: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, list]:
        """Greedy selection among the columns `cols` of X (logits)."""
        counts = np.zeros(X.shape[1], dtype=np.int64)
        Xc = X[:, cols]
        total = np.zeros(X.shape[0])
        t = 0
        trajectory = []
        start = (1.0, 0.0)  # the current pool's scale and intercept: near every candidate's
        if self.n_init:
            score, a, b = self._score(Xc, y)
            for j in np.argsort(score, kind="stable")[: self.n_init]:
                counts[cols[j]] += 1
                total += Xc[:, j]
                t += 1
            score, a, b = self._score((total / t)[:, None], y)
            trajectory.append(float(score[0]))
            start = (float(a[0]), float(b[0]))
        cand = np.empty_like(Xc)
        for _ in range(self.n_iter):
            np.add(total[:, None], Xc, out=cand)
            cand /= t + 1
            score, a, b = self._score(cand, y, start)
            j = int(np.argmin(score))
            counts[cols[j]] += 1
            total += Xc[:, j]
            t += 1
            trajectory.append(float(score[j]))
            start = (float(a[j]), float(b[j]))
        return counts, trajectory

    def _fit(self, X, y, groups):
        self._check_params()
        m = X.shape[1]
        rng = np.random.default_rng(self.random_state)
        counts = np.zeros(m, dtype=np.int64)
        self.trajectories_ = []
        for _ in range(self.n_bags):
            if self.n_bags == 1:
                cols = np.arange(m)
            else:
                size = max(1, int(round(self.bag_fraction * m)))
                cols = np.sort(rng.choice(m, size=size, replace=False))
            c, traj = self._select(X, y, cols)
            counts += c
            self.trajectories_.append(traj)
        self.counts_ = counts
        self.weights_ = counts / counts.sum()
        a, b, _ = fit_affine((X @ self.weights_)[:, None], y)
        self.scale_, self.intercept_ = float(a[0]), float(b[0])

    def weight_table(self):
        return {"count": self.counts_.astype(float), **self._pooled_table()}
