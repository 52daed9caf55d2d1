"""Video-level scores: frame logits aggregated per video (pure numpy).

The video unit is the image table's `video` column when it has one, else its `group`, and
always split by label: a DFDC group holds a real video and the fakes made from it, which are
different videos. Three rules turn a video's frame logits into one logit:

- ``mean_logit`` (default): the mean frame logit.
- ``mean_prob``: the logit of the mean frame probability (icpr2020dfdc averages scores).
- ``confident``: the DFDC winner's rule (Selim Seferbekov, `confident_strategy` in
  kernel_utils.py of github.com/selimsef/dfdc_deepfake_challenge, commit 2f9490c). On
  P(fake) = p of each frame with t = 0.8: if more than ``len // 2.5`` frames AND more than 11
  frames have p > t, average only those; else if more than 90% of frames have p < 0.2,
  average only those; else average all. His 11 assumes 32 frames per video; here it scales
  as 11 * len / 32 (identical at 32 frames), so the rule also works with 5 frames a video.
  Our logits are P(Real) (label 1 = Real), so p = 1 - sigmoid(logit).
"""

from __future__ import annotations

import numpy as np

from ensemble_dfd.stacking import metrics as M

AGGREGATES = ("mean_logit", "mean_prob", "confident")
CONFIDENT_T = 0.8
CONFIDENT_FRAMES_AT_32 = 11


class AggregateError(ValueError):
    """An unknown aggregation rule."""


def check_aggregate(how: str) -> str:
    if how not in AGGREGATES:
        raise AggregateError(f"unknown video aggregate {how!r} (use {', '.join(AGGREGATES)})")
    return how


def video_units(groups: np.ndarray, y: np.ndarray, videos: np.ndarray | None = None
                ) -> np.ndarray:
    """The video key of every frame: (video, else group) + its label."""
    base = np.asarray(videos if videos is not None else groups).astype(str)
    return np.char.add(np.char.add(base, "|"), np.asarray(y).astype(int).astype(str))


def confident_fake_prob(p_fake: np.ndarray, t: float = CONFIDENT_T) -> float:
    """Seferbekov's `confident_strategy` on one video's P(fake) values (see module doc)."""
    p = np.asarray(p_fake, dtype=np.float64)
    sz = p.size
    fakes = int(np.count_nonzero(p > t))
    if fakes > sz // 2.5 and fakes > CONFIDENT_FRAMES_AT_32 * sz / 32:
        return float(np.mean(p[p > t]))
    if np.count_nonzero(p < 0.2) > 0.9 * sz:
        return float(np.mean(p[p < 0.2]))
    return float(np.mean(p))


def aggregate(z: np.ndarray, codes: np.ndarray, n_units: int, how: str = "mean_logit"
              ) -> np.ndarray:
    """One logit per unit (codes 0..n_units-1 give each frame's unit)."""
    z = np.asarray(z, dtype=np.float64)
    size = np.bincount(codes, minlength=n_units).astype(np.float64)
    if how == "mean_logit":
        return np.bincount(codes, weights=z, minlength=n_units) / size
    if how == "mean_prob":
        return M.logit(np.bincount(codes, weights=M.sigmoid(z), minlength=n_units) / size)
    check_aggregate(how)
    p_fake = 1.0 - M.sigmoid(z)
    order = np.argsort(codes, kind="stable")
    bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=n_units))]
    pf = p_fake[order]
    out = np.array([confident_fake_prob(pf[bounds[i]:bounds[i + 1]]) for i in range(n_units)])
    return M.logit(1.0 - out)


def unit_index(units: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Unit keys (sorted), each frame's unit code, and one representative frame per unit."""
    keys, first, codes = np.unique(units, return_index=True, return_inverse=True)
    return keys, codes.ravel(), first
