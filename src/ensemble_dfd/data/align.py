"""Landmark-aligned face crops: the field's recipe (``prepare --align dfb``).

DeepfakeBench (``preprocessing/preprocess.py``, ``extract_aligned_face_dlib``) crops every
face the same way, and most published numbers are computed on those crops:

1. dlib's 68-point shape predictor on the detector's box; five of its points are kept:
   indices 37 and 44 (a point on each upper eyelid), 30 (nose tip), 49 and 55 (the outer
   lip next to each mouth corner) -- DeepfakeBench's indices, kept as they are;
2. the least-squares similarity transform (rotation, uniform scale, shift) taking them to
   ArcFace's 112-px five-point template, shifted 8 px right, scaled to the output size and
   shrunk so the face fills 1 / 1.3 of it (a 1.3x crop);
3. ``cv2.warpAffine`` to 256 x 256 (bilinear, black outside the frame).

DeepfakeBench runs an 81-point predictor whose first 68 points follow the same iBUG layout;
we use the 68-point one shipped in ``face_recognition_models``. How close the result is:
``benchmarks/align_fidelity.py`` and results/benchmarks/README.md.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import cv2
import numpy as np

DFB_POINTS = (37, 44, 30, 49, 55)  # of the 68: left eye, right eye, nose, mouth l/r
DFB_SIZE = 256
DFB_SCALE = 1.3
# ArcFace's five-point template for a 112 x 112 face (x, y)
ARCFACE_112 = ((30.2946, 51.6963), (65.5318, 51.5014), (48.0252, 71.7366),
               (33.5493, 92.3655), (62.7299, 92.2041))
PREDICTOR_FILE = "shape_predictor_68_face_landmarks.dat"
_PREDICTOR: list[Any] = []  # loaded once per process (~0.5 s, 100 MB file)


# ---------------------------------------------------------------- pure geometry


def dfb_template(size: int = DFB_SIZE, scale: float = DFB_SCALE) -> np.ndarray:
    """Where the five points land in a ``size`` x ``size`` crop at ``scale`` (5 x 2, x y):
    the 112-px template moved 8 px right (to a 112-wide square), scaled to ``size``, then a
    margin of ``(scale - 1) / 2`` x size added on each side and the whole shrunk back."""
    dst = np.array(ARCFACE_112, dtype=np.float64)
    dst[:, 0] += 8.0
    dst *= size / 112.0
    margin = size * (scale - 1.0) / 2.0
    return (dst + margin) * (size / (size + 2.0 * margin))


def similarity_matrix(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """The 2 x 3 matrix of the similarity transform (rotation, scale >= 0, shift; no
    reflection) mapping points ``src`` closest to ``dst`` in least squares.

    Solved as the linear least-squares problem in (a, b, tx, ty) with x' = a x - b y + tx,
    y' = b x + a y + ty: the same optimum as Umeyama's method (scikit-image's
    ``SimilarityTransform.estimate``) over the same set of transforms.
    """
    src = np.asarray(src, dtype=np.float64).reshape(-1, 2)
    dst = np.asarray(dst, dtype=np.float64).reshape(-1, 2)
    if len(src) != len(dst) or len(src) < 2:
        raise ValueError(f"need two or more matching points, got {len(src)} and {len(dst)}")
    sm, dm = src.mean(axis=0), dst.mean(axis=0)
    s, d = src - sm, dst - dm
    norm = float((s ** 2).sum())
    if norm == 0.0:
        raise ValueError("the source points coincide: no transform is defined")
    a = float((s[:, 0] * d[:, 0] + s[:, 1] * d[:, 1]).sum()) / norm
    b = float((s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum()) / norm
    rot = np.array([[a, -b], [b, a]])
    return np.hstack([rot, (dm - rot @ sm)[:, None]])


def apply_matrix(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (n x 2) moved by a 2 x 3 affine matrix."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    return pts @ m[:, :2].T + m[:, 2]


def five_points(landmarks68: np.ndarray) -> np.ndarray:
    """DeepfakeBench's five points (5 x 2) out of the 68."""
    pts = np.asarray(landmarks68).reshape(-1, 2)
    if len(pts) < 68:
        raise ValueError(f"need the 68 landmarks, got {len(pts)}")
    return pts[list(DFB_POINTS)].astype(np.float64)


def align_to_template(rgb: np.ndarray, points: np.ndarray, size: int = DFB_SIZE,
                      scale: float = DFB_SCALE) -> tuple[np.ndarray, np.ndarray]:
    """The ``size`` x ``size`` crop with ``points`` (the five) on the template, and the
    2 x 3 matrix used (frame -> crop)."""
    m = similarity_matrix(points, dfb_template(size, scale))
    out = cv2.warpAffine(np.ascontiguousarray(rgb), m, (size, size))
    return out, m


# ---------------------------------------------------------------- dlib


def predictor_file() -> str:
    """The 68-point predictor of face_recognition_models (its
    ``pose_predictor_model_location()``), found without importing the package, whose
    ``__init__`` needs ``pkg_resources`` (gone from setuptools >= 81)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("face_recognition_models is not installed (pip install "
                                  "face_recognition_models); --align dfb needs its landmarks")
    path = Path(spec.submodule_search_locations[0]) / "models" / PREDICTOR_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the 68-point landmark model file is missing")
    return str(path)


def get_predictor() -> Any:
    """dlib's 68-point shape predictor, loaded on first use in this process."""
    if not _PREDICTOR:
        import dlib  # heavy import kept out of module import time

        _PREDICTOR.append(dlib.shape_predictor(predictor_file()))
    return _PREDICTOR[0]


def landmarks68(rgb: np.ndarray, box: tuple[int, int, int, int]) -> np.ndarray:
    """The 68 landmarks (68 x 2, integer pixels as dlib gives them) of the face in ``box``
    (top, right, bottom, left; face_recognition's order) of an RGB uint8 image."""
    import dlib

    top, right, bottom, left = (int(v) for v in box)
    shape = get_predictor()(np.ascontiguousarray(rgb), dlib.rectangle(left, top, right, bottom))
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)],
                    dtype=np.int64)


def aligned_crop(rgb: np.ndarray, box: tuple[int, int, int, int], align: str = "dfb"
                 ) -> np.ndarray:
    """The aligned crop of the face in ``box`` under recipe ``align`` ('dfb':
    DeepfakeBench's 256-px crop at 1.3x; 'none', the box crop, is ``faces.crop``)."""
    if align != "dfb":
        raise ValueError(f"aligned_crop: align must be 'dfb', got {align!r}")
    out, _ = align_to_template(rgb, five_points(landmarks68(rgb, box)))
    return out
