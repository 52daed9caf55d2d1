"""A small synthetic face dataset in the study's layout, clearly labelled as synthetic.

Each "identity" (a stand-in for a video) is a drawn face: skin-toned ellipse, eyes, brows,
nose and mouth with random geometry and colour. Its "fakes" imitate the traces a face swap
leaves: the inner face region is replaced by a re-coloured, smoothed copy pasted back with
a soft but visible blending boundary. Real and fake images of one identity share a group, so
grouped splits keep them together. It needs no download and exists so that the pipeline and
its tests run anywhere; nothing learnt on it says anything about real deepfakes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ensemble_dfd.data.jpeg import encode_jpeg
from ensemble_dfd.runio import atomic_write

SOURCE = "synthetic"


def draw_face(rng: np.random.Generator, size: int) -> np.ndarray:
    """One RGB uint8 face of size x size with random geometry, skin, eyes and background."""
    img = np.empty((size, size, 3), np.uint8)
    img[:] = rng.integers(30, 220, 3)
    noise = rng.normal(0, 6, (size, size, 3))
    c = size / 2 + rng.normal(0, size * 0.03, 2)
    axes = (int(size * rng.uniform(0.28, 0.36)), int(size * rng.uniform(0.36, 0.45)))
    skin = np.array([rng.uniform(150, 240), rng.uniform(100, 190), rng.uniform(70, 160)])
    cv2.ellipse(img, (int(c[0]), int(c[1])), axes, rng.uniform(-8, 8), 0, 360,
                skin.tolist(), -1, cv2.LINE_AA)
    eye_dy, eye_dx = size * rng.uniform(0.06, 0.12), size * rng.uniform(0.11, 0.16)
    eye_r = max(2, int(size * rng.uniform(0.03, 0.05)))
    iris = rng.integers(20, 140, 3).tolist()
    for sx in (-1, 1):
        e = (int(c[0] + sx * eye_dx), int(c[1] - eye_dy))
        cv2.circle(img, e, eye_r + 2, (245, 245, 245), -1, cv2.LINE_AA)
        cv2.circle(img, e, eye_r, iris, -1, cv2.LINE_AA)
        cv2.line(img, (e[0] - eye_r - 2, e[1] - eye_r - 4), (e[0] + eye_r + 2, e[1] - eye_r - 5),
                 (60, 40, 30), max(1, size // 48), cv2.LINE_AA)
    nose = (int(c[0]), int(c[1] + size * 0.05))
    cv2.line(img, (nose[0], int(c[1] - eye_dy * 0.3)), nose, (skin * 0.7).tolist(),
             max(1, size // 64), cv2.LINE_AA)
    mouth_w = int(size * rng.uniform(0.08, 0.14))
    cv2.ellipse(img, (int(c[0]), int(c[1] + size * 0.17)), (mouth_w, max(2, size // 40)), 0,
                0, 180, (int(rng.uniform(120, 200)), 40, 50), -1, cv2.LINE_AA)
    return np.clip(img + noise, 0, 255).astype(np.uint8)


def fake_from(rng: np.random.Generator, real: np.ndarray) -> np.ndarray:
    """Swap-like artefact: re-coloured, smoothed inner face blended back with a soft mask."""
    size = real.shape[0]
    inner = cv2.GaussianBlur(real, (0, 0), rng.uniform(1.5, 3.0)).astype(np.float32)
    # a consistent warm cast plus a random one: blending rarely matches skin tone exactly
    shift = np.array([0.12, -0.04, -0.12]) + rng.normal(0, 0.05, 3)
    inner = inner * (1.0 + shift) + rng.normal(0, 8, 3)
    mask = np.zeros((size, size), np.float32)
    cv2.ellipse(mask, (size // 2, int(size * 0.52)),
                (int(size * rng.uniform(0.2, 0.26)), int(size * rng.uniform(0.25, 0.32))),
                0, 0, 360, 1.0, -1, cv2.LINE_AA)
    mask = cv2.GaussianBlur(mask, (0, 0), size * 0.02)[..., None]
    out = real.astype(np.float32) * (1 - mask) + inner * mask
    return np.clip(out, 0, 255).astype(np.uint8)


def jitter(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """A neighbouring 'frame': small shift, scale and brightness change."""
    size = img.shape[0]
    m = cv2.getRotationMatrix2D((size / 2, size / 2), rng.uniform(-6, 6), rng.uniform(0.95, 1.05))
    m[:, 2] += rng.normal(0, size * 0.02, 2)
    out = cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REFLECT)
    return np.clip(out.astype(np.float32) * rng.uniform(0.9, 1.1), 0, 255).astype(np.uint8)


def make_dataset(out: str | Path, identities: int = 60, frames: int = 6,
                 ratios: tuple[float, float, float] = (0.6, 0.2, 0.2), size_range=(64, 112),
                 seed: int = 0) -> pd.DataFrame:
    """Write out/<split>/<Fake|Real>/*.jpg and out/manifest.csv; return the manifest.

    Each identity gets `frames` real and `frames` fake images; identities (groups) are
    assigned to splits, so no group appears in two splits.
    """
    rng = np.random.default_rng(seed)
    out = Path(out)
    order = rng.permutation(identities)
    n_train = int(round(ratios[0] * identities))
    n_val = int(round(ratios[1] * identities))
    split_of = {int(g): ("train" if i < n_train else "validation" if i < n_train + n_val
                         else "test") for i, g in enumerate(order)}
    rows = []
    for g in range(identities):
        size = int(rng.integers(size_range[0], size_range[1] + 1))
        base = draw_face(rng, size)
        for k in range(frames):
            pair = (("Real", jitter(rng, base)), ("Fake", fake_from(rng, jitter(rng, base))))
            for label, img in pair:
                rel = f"{split_of[g]}/{label}/syn{g:04d}_{k:02d}{label[0]}.jpg"
                data = encode_jpeg(img, 92)
                atomic_write(out / rel, lambda p, d=data: p.write_bytes(d))
                rows.append({"path": rel, "split": split_of[g], "label": label, "source": SOURCE,
                             "group": f"syn{g:04d}", "width": size, "height": size,
                             "sha256": hashlib.sha256(data).hexdigest()})
    manifest = pd.DataFrame(rows).sort_values("path").reset_index(drop=True)
    atomic_write(out / "manifest.csv", lambda p: manifest.to_csv(p, index=False))
    (out / "SYNTHETIC.txt").write_text("Synthetic drawn faces made by ensemble_dfd.data.synthetic; "
                                      "not real people, not real deepfakes.\n")
    return manifest
