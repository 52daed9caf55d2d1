"""Synthetic logits with known structure, for tests and benchmarks (no images, no models).

Model k's logit for image i is
    z_ik = strength_k * (2 y_i - 1) + noise * (sqrt(rho) c_i + sqrt(1 - rho) e_ik) + u_g(i)
with c_i noise shared by all models (correlation rho), e_ik each model's own noise and u_g a
per-group (video) shift shared by every image of the group and every model. All images of a
group carry the same label, like frames of one video.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd


def make_matrix(n: int = 1000, n_models: int = 5, strength: float | Sequence[float] = 1.0,
                noise: float = 1.0, correlation: float = 0.0, group_size: int = 5,
                group_effect: float = 0.0, prevalence: float = 0.5, seed: int = 0,
                rng: np.random.Generator | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(X logits n x n_models, y labels, groups) drawn from the model above.

    `strength` 0 for a model makes it useless (pure noise); `correlation` 1 with
    `noise` > 0 makes all models identical up to their strengths."""
    if not 0.0 <= correlation <= 1.0:
        raise ValueError("correlation must be in [0, 1]")
    rng = rng if rng is not None else np.random.default_rng(seed)
    s = np.broadcast_to(np.asarray(strength, dtype=float), (n_models,))
    n_groups = max(1, -(-n // max(1, group_size)))
    g_label = (rng.random(n_groups) < prevalence).astype(np.int64)
    if n_groups >= 2:  # keep both classes present whenever there can be
        g_label[0], g_label[1] = 0, 1
    groups = np.repeat(np.arange(n_groups), group_size)[:n]
    y = g_label[groups]
    u = rng.normal(0.0, 1.0, n_groups) * group_effect
    shared = rng.normal(size=(n, 1))
    own = rng.normal(size=(n, n_models))
    X = (s * (2 * y - 1)[:, None] + noise * (np.sqrt(correlation) * shared
         + np.sqrt(1.0 - correlation) * own) + u[groups][:, None])
    return X, y, groups


def make_store(n_models: int = 5, sizes: Mapping[str, int] | None = None,
               strength: float | Sequence[float] = 1.0, noise: float = 1.0,
               correlation: float = 0.0, group_size: int = 5, group_effect: float = 0.0,
               split_strength: Mapping[str, float] | None = None, run: str = "synthetic",
               models: Sequence[str] | None = None, seed: int = 0
               ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A logits store (long table) and its per-image table, for `logits.write_store`.

    `sizes` maps split -> number of images (default validation 600, test 600, wild 60);
    `split_strength` scales every model's strength on a split (domain shift, e.g. wild)."""
    sizes = dict(sizes or {"validation": 600, "test": 600, "wild": 60})
    models = list(models) if models is not None else [f"M{k + 1}" for k in range(n_models)]
    if len(models) != n_models:
        raise ValueError("models must name n_models models")
    rng = np.random.default_rng(seed)
    base = np.broadcast_to(np.asarray(strength, dtype=float), (n_models,))
    frames, images = [], []
    for split, n in sizes.items():
        scale = (split_strength or {}).get(split, 1.0)
        X, y, g = make_matrix(n, n_models, base * scale, noise, correlation, group_size,
                              group_effect, rng=rng)
        cls = np.where(y == 1, "Real", "Fake")
        paths = np.array([f"{split}/{c}/v{gi:05d}_{i:06d}.jpg"
                          for i, (c, gi) in enumerate(zip(cls, g, strict=True))])
        images.append(pd.DataFrame({
            "path": paths, "split": split, "label": y, "source": "synthetic",
            "group": [f"{split}-v{gi:05d}" for gi in g],
            "width": rng.integers(60, 500, n), "height": rng.integers(60, 500, n),
        }))
        for k, m in enumerate(models):
            frames.append(pd.DataFrame({"run": run, "model": m, "split": split, "path": paths,
                                        "label": y, "logit": X[:, k]}))
    return pd.concat(frames, ignore_index=True), pd.concat(images, ignore_index=True)
