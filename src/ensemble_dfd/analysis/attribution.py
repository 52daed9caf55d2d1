"""Which image properties go with errors (observational), and the image degradations the
intervention study applies to test whether they cause them.

Observational: error rate by quantile bin of each property with Wilson intervals;
misclassified vs correct images by Mann-Whitney U with the rank-biserial effect size; a
logistic regression of "wrong" on the standardised properties (Wald intervals). The
degradations are pure numpy/OpenCV on RGB uint8 arrays. No TensorFlow here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from scipy import stats

from ensemble_dfd.data.jpeg import jpeg_roundtrip
from ensemble_dfd.data.quality import PROPERTY_COLUMNS
from ensemble_dfd.stacking.logistic import hessian, newton_logistic

BIN_COLUMNS = ["predictor", "kind", "property", "bin", "lo", "hi", "median", "n", "n_wrong",
               "error_rate", "ci_lo", "ci_hi"]
RANK_COLUMNS = ["predictor", "kind", "property", "n_wrong", "n_right", "median_wrong",
                "median_right", "u", "p", "rank_biserial"]
LOGIT_COLUMNS = ["predictor", "kind", "term", "coef", "se", "ci_lo", "ci_hi", "z", "p",
                 "odds_ratio", "n", "n_wrong"]
# size and sharpness are heavy-tailed: regress on their logs so a few huge or very sharp
# images do not dominate; width/height are left out (collinear with area)
REGRESSION_FEATURES: dict[str, tuple[str, Callable[[np.ndarray], np.ndarray]]] = {
    "log_area": ("area", np.log),
    "log_blur": ("blur", np.log1p),
    "jpeg_quality": ("jpeg_quality", lambda v: v),
    "brightness": ("brightness", lambda v: v),
    "contrast": ("contrast", lambda v: v),
}


# ---------------------------------------------------------------------------------------
# intervals and bins


def wilson_ci(k: np.ndarray | int, n: np.ndarray | int, alpha: float = 0.05
              ) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval for k successes in n trials (NaN where n = 0); stays inside
    [0, 1] and behaves at k = 0 or k = n, unlike the normal approximation."""
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = stats.norm.ppf(1 - alpha / 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = k / n
        den = 1 + z * z / n
        center = (p + z * z / (2 * n)) / den
        half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
        lo = np.where(n > 0, np.clip(center - half, 0, 1), np.nan)
        hi = np.where(n > 0, np.clip(center + half, 0, 1), np.nan)
    return lo, hi


def quantile_bins(values: np.ndarray, n_bins: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Bin codes 0..k-1 by quantiles of the finite values (-1 for NaN) and the k+1 edges.

    Intervals are (lo, hi], the first closed; repeated quantiles (many images of one size)
    merge bins, so k <= n_bins."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    codes = np.full(v.size, -1, dtype=np.int64)
    if not ok.any():
        return codes, np.array([])
    edges = np.unique(np.quantile(v[ok], np.linspace(0, 1, n_bins + 1)))
    if edges.size == 1:
        codes[ok] = 0
        return codes, np.array([edges[0], edges[0]])
    codes[ok] = np.searchsorted(edges[1:-1], v[ok], side="left")
    return codes, edges


def _wrong_items(wrong: Mapping[str, np.ndarray], kinds: Mapping[str, str] | None
                 ) -> list[tuple[str, str, np.ndarray]]:
    kinds = kinds or {}
    return [(name, kinds.get(name, "single"), np.asarray(w, dtype=bool))
            for name, w in wrong.items()]


def _props_frame(props: pd.DataFrame, properties: Sequence[str] | None) -> list[str]:
    cols = list(properties) if properties is not None else [
        c for c in PROPERTY_COLUMNS if c in props.columns]
    absent = [c for c in cols if c not in props.columns]
    if absent:
        raise ValueError(f"no image property column(s) {', '.join(absent)}")
    return cols


def error_by_bin(props: pd.DataFrame, wrong: Mapping[str, np.ndarray],
                 properties: Sequence[str] | None = None, n_bins: int = 4,
                 kinds: Mapping[str, str] | None = None, alpha: float = 0.05) -> pd.DataFrame:
    """Error rate of each predictor in each quantile bin of each property, with Wilson CIs.

    `props` rows align with every array in `wrong` (True = misclassified)."""
    cols = _props_frame(props, properties)
    rows = []
    for prop in cols:
        v = props[prop].to_numpy(dtype=np.float64)
        codes, edges = quantile_bins(v, n_bins)
        k_bins = max(0, edges.size - 1)
        for name, kind, w in _wrong_items(wrong, kinds):
            if w.shape != v.shape:
                raise ValueError(f"{name}: {w.size} verdicts for {v.size} images")
            for b in range(k_bins):
                sel = codes == b
                n = int(sel.sum())
                k = int(w[sel].sum())
                lo, hi = wilson_ci(k, n, alpha)
                rows.append({"predictor": name, "kind": kind, "property": prop, "bin": b,
                             "lo": float(edges[b]), "hi": float(edges[b + 1]),
                             "median": float(np.median(v[sel])) if n else math.nan,
                             "n": n, "n_wrong": k, "error_rate": k / n if n else math.nan,
                             "ci_lo": float(lo), "ci_hi": float(hi)})
    return pd.DataFrame(rows, columns=BIN_COLUMNS)


# ---------------------------------------------------------------------------------------
# rank tests


def rank_biserial(u_first: float, n_first: int, n_second: int) -> float:
    """Rank-biserial correlation from the first group's U: P(first > second) -
    P(first < second), in [-1, 1]."""
    if n_first == 0 or n_second == 0:
        return math.nan
    return 2.0 * u_first / (n_first * n_second) - 1.0


def rank_tests(props: pd.DataFrame, wrong: Mapping[str, np.ndarray],
               properties: Sequence[str] | None = None,
               kinds: Mapping[str, str] | None = None) -> pd.DataFrame:
    """Misclassified vs correct images, per predictor and property: two-sided Mann-Whitney
    U (of the misclassified group) and rank-biserial r (> 0: wrong images have larger
    values, e.g. a negative r for blur means wrong images are blurrier)."""
    cols = _props_frame(props, properties)
    rows = []
    for name, kind, w in _wrong_items(wrong, kinds):
        for prop in cols:
            v = props[prop].to_numpy(dtype=np.float64)
            ok = np.isfinite(v)
            a, b = v[ok & w], v[ok & ~w]
            u = p = r = math.nan
            if a.size and b.size:
                res = stats.mannwhitneyu(a, b, alternative="two-sided")
                u, p = float(res.statistic), float(res.pvalue)
                r = rank_biserial(u, a.size, b.size)
            rows.append({"predictor": name, "kind": kind, "property": prop,
                         "n_wrong": int(a.size), "n_right": int(b.size),
                         "median_wrong": float(np.median(a)) if a.size else math.nan,
                         "median_right": float(np.median(b)) if b.size else math.nan,
                         "u": u, "p": p, "rank_biserial": r})
    return pd.DataFrame(rows, columns=RANK_COLUMNS)


# ---------------------------------------------------------------------------------------
# logistic regression


@dataclass(frozen=True)
class LogisticFit:
    coef: np.ndarray  # intercept first
    se: np.ndarray
    n_iter: int
    converged: bool


def fit_logistic(A: np.ndarray, y: np.ndarray, ridge: float = 1e-3, max_iter: int = 100,
                 tol: float = 1e-10) -> LogisticFit:
    """Logistic regression of y on A (intercept added), by `logistic.newton_logistic`.

    A small ridge on the slopes keeps the fit finite when a property separates the classes
    (small samples, e.g. 26 wild faces); standard errors come from the inverse Hessian."""
    A = np.column_stack([np.ones(len(A)), np.asarray(A, dtype=np.float64)])
    y = np.asarray(y, dtype=np.float64)
    pen = np.r_[0.0, np.full(A.shape[1] - 1, ridge)]
    fit = newton_logistic(A, y, pen, max_iter, tol, jitter=1e-12)
    try:
        cov = np.linalg.inv(hessian(A, fit.theta, pen, 1e-12))
        se = np.sqrt(np.clip(np.diag(cov), 0, None))
    except np.linalg.LinAlgError:
        se = np.full(fit.theta.size, np.nan)
    return LogisticFit(fit.theta, se, fit.n_iter, fit.converged)


def regression_design(props: pd.DataFrame, labels: np.ndarray | None = None,
                      sources: Sequence[str] | None = None, min_coverage: float = 0.5
                      ) -> tuple[pd.DataFrame, np.ndarray]:
    """Standardised features (z-scores of REGRESSION_FEATURES that vary and are known for
    at least `min_coverage` of the images) plus controls: is_real (error rates differ by
    class) and source dummies (sources differ in size and quality). Returns the design
    and the mask of rows it keeps (rows with any unknown feature are dropped)."""
    cols: dict[str, np.ndarray] = {}
    n = len(props)
    for name, (src, f) in REGRESSION_FEATURES.items():
        if src not in props.columns:
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            v = f(props[src].to_numpy(dtype=np.float64))
        v = np.where(np.isfinite(v), v, np.nan)
        if np.isfinite(v).mean() >= min_coverage and np.nanstd(v) > 0:
            cols[name] = v
    if labels is not None:
        lab = np.asarray(labels, dtype=np.float64)
        if np.unique(lab).size > 1:
            cols["is_real"] = lab
    if sources is not None:
        src = pd.Series(list(sources), dtype=str)
        for level in sorted(src.unique())[1:]:  # first source is the reference
            cols[f"source={level}"] = (src == level).to_numpy(dtype=np.float64)
    design = pd.DataFrame(cols, index=range(n))
    keep = design.notna().all(axis=1).to_numpy() if len(cols) else np.ones(n, bool)
    design = design[keep]
    for c in design.columns:
        if c in REGRESSION_FEATURES:
            sd = design[c].std(ddof=0)
            design[c] = (design[c] - design[c].mean()) / (sd if sd > 0 else 1.0)
    # a control that became constant after dropping rows carries nothing
    design = design.loc[:, design.std(ddof=0) > 0] if len(design) else design
    return design.reset_index(drop=True), keep


def logistic_attribution(props: pd.DataFrame, wrong: Mapping[str, np.ndarray],
                         labels: np.ndarray | None = None,
                         sources: Sequence[str] | None = None,
                         kinds: Mapping[str, str] | None = None,
                         alpha: float = 0.05) -> pd.DataFrame:
    """Per predictor, log-odds of being wrong per standard deviation of each property
    (holding the others and the controls fixed), with Wald CIs. A predictor that is always
    right (or always wrong) on the kept rows has nothing to explain and is left out."""
    design, keep = regression_design(props, labels, sources)
    z = stats.norm.ppf(1 - alpha / 2)
    terms = ["intercept", *design.columns]
    rows = []
    for name, kind, w in _wrong_items(wrong, kinds):
        yw = w[keep].astype(np.float64)
        if yw.size < 3 or yw.min() == yw.max() or design.shape[1] == 0:
            continue
        fit = fit_logistic(design.to_numpy(), yw)
        for t, c, s in zip(terms, fit.coef, fit.se, strict=True):
            zval = c / s if s > 0 else math.nan
            rows.append({"predictor": name, "kind": kind, "term": t, "coef": float(c),
                         "se": float(s), "ci_lo": float(c - z * s), "ci_hi": float(c + z * s),
                         "z": float(zval),
                         "p": float(2 * stats.norm.sf(abs(zval))) if np.isfinite(zval)
                         else math.nan,
                         "odds_ratio": float(np.exp(np.clip(c, -700, 700))),
                         "n": int(yw.size), "n_wrong": int(yw.sum())})
    return pd.DataFrame(rows, columns=LOGIT_COLUMNS)


# ---------------------------------------------------------------------------------------
# degradations (RGB uint8 in, RGB uint8 out, same size)


def _check_image(img: np.ndarray) -> np.ndarray:
    img = np.asarray(img)
    if img.dtype != np.uint8 or img.ndim not in (2, 3) or img.shape[0] == 0 or img.shape[1] == 0:
        raise ValueError(f"expected a uint8 image (H, W[, C]), got {img.dtype} {img.shape}")
    return img


def gaussian_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with standard deviation `sigma` pixels; sigma <= 0 is the original."""
    img = _check_image(img)
    if sigma <= 0:
        return img.copy()
    return cv2.GaussianBlur(img, (0, 0), sigmaX=float(sigma), sigmaY=float(sigma),
                            borderType=cv2.BORDER_REFLECT_101)


def down_up(img: np.ndarray, factor: float) -> np.ndarray:
    """Downscale by `factor` (area averaging) and upscale back (bilinear): the detail of a
    smaller face at the same size; factor <= 1 is the original."""
    img = _check_image(img)
    if factor <= 1:
        return img.copy()
    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w / factor)), max(1, round(h / factor))),
                       interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def jpeg(img: np.ndarray, quality: float) -> np.ndarray:
    """Re-compress as JPEG at `quality` (1-100, IJG scale); quality <= 0 is the original."""
    img = _check_image(img)
    if quality <= 0:
        return img.copy()
    q = int(min(100, max(1, round(quality))))
    return jpeg_roundtrip(img, q)[0]


@dataclass(frozen=True)
class Degradation:
    """A degradation: f(img, level); `original` is the level that leaves images unchanged."""

    name: str
    apply: Callable[[np.ndarray, float], np.ndarray]
    original: float
    default_levels: tuple[float, ...]
    unit: str

    def levels_with_original(self, levels: Sequence[float] | None = None) -> list[float]:
        """The levels to run, the original first (added when missing), no duplicates."""
        levels = list(self.default_levels if levels is None else levels)
        out = [self.original] + [float(v) for v in levels if float(v) != self.original]
        return list(dict.fromkeys(out))


# three non-trivial levels each (plus the original) keeps a 2-core run to minutes
DEGRADATIONS: dict[str, Degradation] = {
    "blur": Degradation("blur", gaussian_blur, 0.0, (1.0, 2.0, 4.0), "sigma px"),
    "downscale": Degradation("downscale", down_up, 1.0, (2.0, 4.0, 8.0),
                             "factor"),
    "jpeg": Degradation("jpeg", jpeg, 0.0, (50.0, 20.0, 10.0),
                        "quality"),
}
