"""The one logistic-regression solver: penalised Newton steps with backtracking.

Used by the stacked meta-learner (`ensemble.learners`, C chosen by CV) and by the blur/size
attribution (`analysis.attribution`, standard errors from the Hessian). A few columns make
each Hessian tiny, so this is far faster than a general solver inside nested CV.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ensemble_dfd.stacking.metrics import sigmoid


@dataclass(frozen=True)
class NewtonFit:
    theta: np.ndarray  # one coefficient per column of the design
    n_iter: int
    converged: bool  # False only when max_iter ran out


def hessian(A: np.ndarray, theta: np.ndarray, pen: np.ndarray, jitter: float) -> np.ndarray:
    """Hessian of the penalised log-loss at theta."""
    p = sigmoid(A @ theta)
    return A.T @ (A * (p * (1.0 - p))[:, None]) + np.diag(pen + jitter)


def newton_logistic(A: np.ndarray, y: np.ndarray, pen: np.ndarray, max_iter: int = 100,
                    tol: float = 1e-10, start: np.ndarray | None = None,
                    jitter: float = 1e-10) -> NewtonFit:
    """Minimise sum(log(1 + e^z) - y z) + ||sqrt(pen) * theta||^2 / 2 with z = A theta
    (pen 0 leaves a column, e.g. the intercept, unpenalised), by damped Newton steps:
    each halved while the objective rises, since Newton overshoots on (nearly) separable
    data; `jitter` on the Hessian's diagonal keeps it invertible."""
    theta = np.zeros(A.shape[1]) if start is None else np.asarray(start, dtype=np.float64)

    def objective(t):
        z = A @ t
        return float(np.sum(np.logaddexp(0.0, z) - y * z) + 0.5 * np.sum(pen * t * t))

    f = objective(theta)
    n_iter = 0
    converged = False
    for n_iter in range(1, max_iter + 1):  # noqa: B007 (the count is returned)
        p = sigmoid(A @ theta)
        g = A.T @ (p - y) + pen * theta
        H = hessian(A, theta, pen, jitter)
        try:
            step = np.linalg.solve(H, g)
        except np.linalg.LinAlgError:
            step = np.linalg.lstsq(H, g, rcond=None)[0]
        t = 1.0
        while True:  # backtracking
            cand = theta - t * step
            fc = objective(cand)
            if fc <= f + 1e-12 * abs(f) or t < 1e-8:
                break
            t /= 2
        if fc > f:  # no descent left at machine precision: we are at the optimum
            converged = True
            break
        done = f - fc <= tol * max(1.0, abs(f))
        theta, f = cand, fc
        if done:
            converged = True
            break
    return NewtonFit(theta, n_iter, converged)
