"""The study's seven metrics and what the comparison adds: AUC, AP, EER, log-loss, Brier, ECE,
grouped bootstrap confidence intervals, the exact McNemar test and threshold selection.

Pure numpy/scipy (no scikit-learn, so the property tests that compare against it mean something).

Conventions (as in the study):
- Labels: 1 = Real (the positive class), 0 = Fake.
- Scores are logits unless a name says ``prob``; the decision rule is ``logit > threshold``,
  so the default threshold 0.0 is "sigmoid > 0.5". An image exactly on the threshold is
  called Fake.
- 0/0 cases: TPR, TNR, PPV and NPV are NaN when their denominator is 0 (undefined, e.g. TPR
  on a split without reals). F1 = 2TP / (2TP + FP + FN) is NaN only when TP = FP = FN = 0
  (otherwise it is 0 when TP = 0, as scikit-learn computes it). MCC is 0.0 when any factor
  of its denominator is 0 (scikit-learn's convention: no better than chance). ROC-AUC is
  NaN (with a warning) when the labels hold a single class.
"""

from __future__ import annotations

import math
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from scipy.special import expit as _expit

from ensemble_dfd.errors import UsageError

CI_METRICS = ("acc", "auc", "mcc")
_EPS = np.finfo(np.float64).eps


class OneClassWarning(UserWarning):
    """A metric that needs both classes was asked of labels with only one."""


# ---------------------------------------------------------------------------------------
# elementary transforms and checks


def sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function."""
    return _expit(np.asarray(z, dtype=np.float64))


def logit(p: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Inverse sigmoid, clipped so that 0 and 1 map to finite values."""
    p = np.clip(np.asarray(p, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def _check_pair(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y)
    s = np.asarray(s, dtype=np.float64)
    if y.ndim != 1 or s.shape != y.shape:
        raise ValueError(f"labels {y.shape} and scores {s.shape} must be 1-D and equal length")
    if y.size == 0:
        raise ValueError("no samples")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 (Fake) or 1 (Real)")
    if not np.isfinite(s).all():
        raise ValueError("scores must be finite (no NaN/inf)")
    return y.astype(np.int64), s


# ---------------------------------------------------------------------------------------
# confusion counts and the study's seven metrics


@dataclass(frozen=True)
class Confusion:
    tp: int
    tn: int
    fp: int
    fn: int

    @property
    def n(self) -> int:
        return self.tp + self.tn + self.fp + self.fn


def confusion(y: np.ndarray, pred: np.ndarray) -> Confusion:
    """TP/TN/FP/FN with Real (1) as the positive class."""
    y = np.asarray(y).astype(bool)
    pred = np.asarray(pred).astype(bool)
    tp = int(np.count_nonzero(y & pred))
    tn = int(np.count_nonzero(~y & ~pred))
    return Confusion(tp, tn, int(np.count_nonzero(~y & pred)), int(np.count_nonzero(y & ~pred)))


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1.0), np.nan)


def rates(tp, tn, fp, fn) -> dict[str, np.ndarray]:
    """The seven metrics from counts; works on scalars or arrays (bootstrap resamples)."""
    tp, tn, fp, fn = (np.asarray(v, dtype=np.float64) for v in (tp, tn, fp, fn))
    n = tp + tn + fp + fn
    den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    with np.errstate(divide="ignore", invalid="ignore"):
        mcc = np.where(den > 0, (tp * tn - fp * fn) / np.sqrt(np.where(den > 0, den, 1.0)), 0.0)
    return {
        "acc": _div(tp + tn, n),
        "tpr": _div(tp, tp + fn),
        "tnr": _div(tn, tn + fp),
        "ppv": _div(tp, tp + fp),
        "npv": _div(tn, tn + fn),
        "f1": _div(2 * tp, 2 * tp + fp + fn),
        "mcc": mcc,
    }


def seven_metrics(y: np.ndarray, score: np.ndarray, threshold: float = 0.0) -> dict[str, float]:
    """Counts and the seven metrics for ``score > threshold`` = Real."""
    y, score = _check_pair(y, score)
    c = confusion(y, score > threshold)
    out: dict[str, float] = {"tp": c.tp, "tn": c.tn, "fp": c.fp, "fn": c.fn}
    out.update({k: float(v) for k, v in rates(c.tp, c.tn, c.fp, c.fn).items()})
    return out


# ---------------------------------------------------------------------------------------
# threshold-free metrics


def roc_auc(y: np.ndarray, score: np.ndarray, sample_weight: np.ndarray | None = None,
            warn: bool = True) -> float:
    """Area under the ROC curve (Mann-Whitney with ties counted half); NaN for one class."""
    y, score = _check_pair(y, score)
    w = np.ones_like(score) if sample_weight is None else np.asarray(sample_weight, float)
    wp, wn = w * (y == 1), w * (y == 0)
    P, N = wp.sum(), wn.sum()
    if P <= 0 or N <= 0:
        if warn:
            warnings.warn("ROC-AUC needs both classes; returning NaN", OneClassWarning,
                          stacklevel=2)
        return float("nan")
    order = np.argsort(score, kind="mergesort")
    s = score[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    pu = np.add.reduceat(wp[order], starts)
    nu = np.add.reduceat(wn[order], starts)
    below = np.cumsum(nu) - nu
    return float((pu * (below + 0.5 * nu)).sum() / (P * N))


def log_loss(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean binary cross-entropy; probabilities clipped to [eps, 1-eps] as scikit-learn does."""
    y, prob = _check_pair(y, prob)
    p = np.clip(prob, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def log_loss_from_logits(y: np.ndarray, z: np.ndarray) -> float:
    """Cross-entropy computed on the logit scale (no saturation for large |logit|)."""
    y, z = _check_pair(y, z)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def brier(y: np.ndarray, prob: np.ndarray) -> float:
    """Mean squared error of P(Real)."""
    y, prob = _check_pair(y, prob)
    return float(np.mean((prob - y) ** 2))


def ece(y: np.ndarray, prob: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of P(Real) over equal-width bins on [0, 1]:
    sum over bins of (bin share) * |mean label - mean probability|."""
    y, prob = _check_pair(y, prob)
    if np.any((prob < 0) | (prob > 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    idx = np.minimum((prob * n_bins).astype(np.int64), n_bins - 1)
    sy = np.bincount(idx, weights=y.astype(float), minlength=n_bins)
    sp = np.bincount(idx, weights=prob, minlength=n_bins)
    return float(np.abs(sy - sp).sum() / y.size)


def _score_blocks(score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Descending order of the scores and the last position of each distinct-score block."""
    order = np.argsort(-score, kind="mergesort")
    s = score[order]
    return order, np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]


def average_precision(y: np.ndarray, score: np.ndarray) -> float:
    """Average precision of ``score`` for the positive label 1, as scikit-learn's
    average_precision_score computes it: sum over distinct thresholds (descending) of
    (R_k - R_{k-1}) * P_k, ties in one step; NaN without positives."""
    y, score = _check_pair(y, score)
    if not y.any():
        return float("nan")
    order, last = _score_blocks(score)
    tps = np.cumsum(y[order])[last].astype(np.float64)
    fps = (last + 1) - tps
    prec, rec = tps / (tps + fps), tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, rec]) * prec))


def fake_ap(y: np.ndarray, z: np.ndarray) -> float:
    """AP of detecting fakes (positive = Fake, score = -logit): what the field reports as AP
    (DeepfakeBench labels fakes 1), unlike this module's Real-positive counts."""
    return average_precision(1 - np.asarray(y), -np.asarray(z, dtype=np.float64))


def eer(y: np.ndarray, score: np.ndarray) -> float:
    """Equal error rate: where the (linearly interpolated) ROC curve crosses FNR = FPR, the
    value brentq(lambda x: 1 - x - interp(x, fpr, tpr), 0, 1) gives; NaN for one class."""
    y, score = _check_pair(y, score)
    if np.unique(y).size < 2:
        return float("nan")
    fpr, tpr, _ = roc_points(y, score)
    d = (1.0 - tpr) - fpr  # 1 at the strictest threshold, -1 at the loosest
    i = int(np.flatnonzero(d <= 0)[0])
    if d[i] == 0:
        return float(fpr[i])
    t = d[i - 1] / (d[i - 1] - d[i])
    return float(fpr[i - 1] + t * (fpr[i] - fpr[i - 1]))


def evaluate(y: np.ndarray, z: np.ndarray, threshold: float = 0.0) -> dict[str, float]:
    """Everything the comparison table reports for one predictor on one split.

    ``z`` are logits (monotone scores whose sigmoid is P(Real))."""
    y, z = _check_pair(y, z)
    out = seven_metrics(y, z, threshold)
    p = sigmoid(z)
    out["n"] = int(y.size)
    out["auc"] = roc_auc(y, z)
    out["ap"] = fake_ap(y, z)
    out["eer"] = eer(y, z)
    out["logloss"] = log_loss_from_logits(y, z)
    out["brier"] = brier(y, p)
    out["ece"] = ece(y, p)
    return out


# ---------------------------------------------------------------------------------------
# ROC points and thresholds chosen on validation


def roc_points(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """FPR, TPR and thresholds for the rule ``score > t``, from strictest to loosest.

    Thresholds are midpoints between consecutive distinct scores (and +/-inf at the ends),
    so a threshold never coincides with a validation score."""
    y, score = _check_pair(y, score)
    u = np.unique(score)
    thr = np.r_[np.inf, (u[1:] + u[:-1])[::-1] / 2.0, -np.inf]
    order = np.argsort(-score, kind="mergesort")
    s, yy = score[order], y[order]
    # after each distinct score (descending) everything with a larger-or-equal score is Real
    last = np.r_[np.flatnonzero(s[1:] != s[:-1]), s.size - 1]
    tps = np.r_[0, np.cumsum(yy)[last]]
    fps = np.r_[0, np.cumsum(1 - yy)[last]]
    P, N = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    return fps / N, tps / P, thr


def _need_both(y: np.ndarray, what: str) -> None:
    if np.unique(y).size < 2:
        raise UsageError(f"{what} needs both classes (Real and Fake) in the validation labels")


def eer_threshold(y: np.ndarray, score: np.ndarray) -> float:
    """Threshold where the false-positive rate is closest to the false-negative rate."""
    _need_both(np.asarray(y), "an EER threshold")
    fpr, tpr, thr = roc_points(y, score)
    i = int(np.argmin(np.abs(fpr - (1 - tpr))[1:-1])) + 1 if thr.size > 2 else 0
    return float(thr[i]) if np.isfinite(thr[i]) else 0.0


def fpr_threshold(y: np.ndarray, score: np.ndarray, target: float) -> float:
    """Loosest threshold whose false-positive rate (fakes called real) is <= target."""
    if not 0.0 <= target <= 1.0:
        raise UsageError(f"target FPR must be in [0, 1], got {target}")
    _need_both(np.asarray(y), "a target-FPR threshold")
    fpr, _, thr = roc_points(y, score)
    ok = np.flatnonzero(fpr <= target + 1e-12)
    t = float(thr[ok[-1]])
    if np.isinf(t):  # +inf: call nothing real; -inf: everything real; keep them finite
        s = np.asarray(score, float)
        t = float(s.max() + 1.0) if t > 0 else float(s.min() - 1.0)
    return t


def choose_threshold(rule: str, y: np.ndarray, score: np.ndarray) -> float:
    """``fixed`` (0 on the logit scale), ``eer`` or ``fpr:<target>``."""
    if rule == "fixed":
        return 0.0
    if rule == "eer":
        return eer_threshold(y, score)
    if rule.startswith("fpr:"):
        return fpr_threshold(y, score, float(rule[4:]))
    raise UsageError(f"unknown threshold rule {rule!r} (use fixed, eer or fpr:<rate>)")


def parse_threshold_rule(rule: str) -> str:
    """Validate a threshold rule string early (before any work is done)."""
    if rule in ("fixed", "eer"):
        return rule
    if rule.startswith("fpr:"):
        try:
            t = float(rule[4:])
        except ValueError:
            t = -1.0
        if 0.0 <= t <= 1.0:
            return rule
    raise UsageError(f"bad --threshold {rule!r}: use fixed, eer or fpr:<rate in [0,1]>")


# ---------------------------------------------------------------------------------------
# McNemar


def mcnemar_exact(correct_a: np.ndarray, correct_b: np.ndarray) -> tuple[int, int, float]:
    """Exact two-sided McNemar test: binomial(b + c, 1/2) on the discordant pairs.

    Returns (b, c, p) with b = A right & B wrong, c = A wrong & B right; p = 1 if b + c = 0."""
    a = np.asarray(correct_a, dtype=bool)
    b_ = np.asarray(correct_b, dtype=bool)
    if a.shape != b_.shape:
        raise ValueError("McNemar needs paired predictions of equal length")
    b = int(np.count_nonzero(a & ~b_))
    c = int(np.count_nonzero(~a & b_))
    n = b + c
    if n == 0:
        return b, c, 1.0
    k = min(b, c)
    # log-space binomial tail: exact for any n without overflow
    logs = [math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2)
            for i in range(k + 1)]
    m = max(logs)
    tail = math.exp(m) * sum(math.exp(v - m) for v in logs)
    return b, c, float(min(1.0, 2.0 * tail))


# ---------------------------------------------------------------------------------------
# grouped bootstrap


def group_codes(groups: np.ndarray) -> tuple[np.ndarray, int]:
    """Integer codes 0..G-1 for arbitrary group labels."""
    _, codes = np.unique(np.asarray(groups), return_inverse=True)
    codes = codes.ravel()
    return codes, int(codes.max()) + 1 if codes.size else 0


def bootstrap_counts(n_groups: int, n_boot: int, seed: int | np.random.Generator = 0
                     ) -> np.ndarray:
    """(n_boot x n_groups) multiplicities: each row draws n_groups groups with replacement."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n_groups, size=(n_boot, n_groups))
    flat = (draws + (np.arange(n_boot) * n_groups)[:, None]).ravel()
    return np.bincount(flat, minlength=n_boot * n_groups).reshape(n_boot, n_groups).astype(
        np.int32)


@dataclass
class BootstrapSamples:
    """Per-resample values of the CI metrics for one predictor (paired across predictors
    that share the same counts matrix)."""

    acc: np.ndarray
    auc: np.ndarray
    mcc: np.ndarray
    ap: np.ndarray | None = None  # fake-class AP (see fake_ap)

    def ci(self, metric: str, alpha: float = 0.05) -> tuple[float, float]:
        return percentile_ci(getattr(self, metric), alpha)


def percentile_ci(values: np.ndarray, alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval, ignoring resamples where the metric is undefined."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("nan"), float("nan")
    lo, hi = np.quantile(v, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def bootstrap_samples(y: np.ndarray, z: np.ndarray, codes: np.ndarray, counts: np.ndarray,
                      threshold: float = 0.0, chunk_elems: int = 2_000_000,
                      n_jobs: int = 1) -> BootstrapSamples:
    """ACC, MCC, AUC and the fake-class AP on every group resample in ``counts`` (from
    ``bootstrap_counts``; a float32 copy of it is accepted and saves a conversion per call).

    Each image weighs as often as its group was drawn. Counts-based metrics reduce to a
    (B x G) @ (G x 4) product; AUC and AP need weighted cumulative sums per resample, done in
    chunks of resamples on the score-sorted images so memory stays bounded."""
    y, z = _check_pair(y, z)
    codes = np.asarray(codes)
    n_groups = counts.shape[1]
    cf = counts if counts.dtype == np.float32 else counts.astype(np.float32)
    pred = z > threshold
    yb = y.astype(bool)
    cell = np.stack([yb & pred, ~yb & ~pred, ~yb & pred, yb & ~pred], axis=1).astype(np.float64)
    per_group = np.stack([np.bincount(codes, weights=cell[:, k], minlength=n_groups)
                          for k in range(4)], axis=1)
    # float32 BLAS is exact here: counts and per-group cells are integers far below 2**24
    tp, tn, fp, fn = (cf @ per_group.astype(np.float32)).astype(np.float64).T
    r = rates(tp, tn, fp, fn)
    auc, ap = _bootstrap_auc_ap(yb, z, codes, cf, chunk_elems, n_jobs)
    return BootstrapSamples(acc=r["acc"], auc=auc, mcc=r["mcc"], ap=ap)


def _bootstrap_auc_ap(yb: np.ndarray, z: np.ndarray, codes: np.ndarray, cf: np.ndarray,
                      chunk_elems: int, n_jobs: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Weighted Mann-Whitney AUC (Real positive) and fake-class AP for every resample.

    AUC: with negatives (fakes) sorted by score, CN[:, k] = weight of the k lowest; a real
    with a fakes strictly below it and b at or below it contributes w * (CN[a] + CN[b]) / 2.
    AP of fakes (score -z): a fake's precision is TP / (TP + FP) over everything with
    z <= its z (ties share their block's value, as in scikit-learn): TP = CN[b'] and FP =
    CP[c'] read from the same CN and the reals' CP. Work per resample: gathers, two cumsums
    and two dot products, O(n), in float32 to halve memory traffic."""
    order_n = np.argsort(z[~yb], kind="mergesort")
    neg_scores, neg_codes = z[~yb][order_n], codes[~yb][order_n]
    order_p = np.argsort(z[yb], kind="mergesort")
    pos_scores, pos_codes = z[yb][order_p], codes[yb][order_p]
    a = np.searchsorted(neg_scores, pos_scores, side="left")
    b = np.searchsorted(neg_scores, pos_scores, side="right")
    tp_at = np.searchsorted(neg_scores, neg_scores, side="right")  # fakes with z <= each fake
    fp_at = np.searchsorted(pos_scores, neg_scores, side="right")  # reals with z <= it
    ties = bool(np.any(a != b))
    n_boot = cf.shape[0]
    auc, ap = np.full(n_boot, np.nan), np.full(n_boot, np.nan)
    if neg_scores.size == 0:
        return auc, ap
    step = max(1, chunk_elems // max(1, z.size))

    def chunk(lo: int) -> None:
        c = cf[lo:lo + step]
        wn = c[:, neg_codes]
        cn = np.zeros((c.shape[0], wn.shape[1] + 1), dtype=np.float32)
        np.cumsum(wn, axis=1, out=cn[:, 1:])
        wp = c[:, pos_codes]
        cp = np.zeros((c.shape[0], wp.shape[1] + 1), dtype=np.float32)
        np.cumsum(wp, axis=1, out=cp[:, 1:])
        P = cp[:, -1].astype(np.float64)
        N = cn[:, -1].astype(np.float64)
        tp = cn[:, tp_at]
        with np.errstate(divide="ignore", invalid="ignore"):
            prec = tp / (tp + cp[:, fp_at])
            prec[~np.isfinite(prec)] = 0.0  # only where the fake's own weight is 0
            ap[lo:lo + step] = np.where(N > 0, np.einsum("ij,ij->i", wn, prec,
                                                         dtype=np.float64) / N, np.nan)
        if pos_codes.size == 0:
            return
        below = cn[:, a]
        if ties:
            below += cn[:, b]
            below *= 0.5
        num = np.einsum("ij,ij->i", wp, below, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            auc[lo:lo + step] = np.where((P > 0) & (N > 0), num / (P * N), np.nan)

    starts = range(0, n_boot, step)
    if n_jobs > 1 and len(starts) > 1:
        # numpy releases the GIL in these loops, so threads use the other cores
        with ThreadPoolExecutor(n_jobs) as pool:
            list(pool.map(chunk, starts))
    else:
        for lo in starts:
            chunk(lo)
    return auc, ap


def bootstrap_ci(y: np.ndarray, z: np.ndarray, groups: np.ndarray, threshold: float = 0.0,
                 n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
                 ) -> dict[str, tuple[float, float]]:
    """95% (by default) percentile CIs for ACC, AUC and MCC, resampling groups (videos)."""
    codes, g = group_codes(groups)
    counts = bootstrap_counts(g, n_boot, seed)
    bs = bootstrap_samples(y, z, codes, counts, threshold)
    return {m: bs.ci(m, alpha) for m in CI_METRICS}
