"""Face detection and cropping: face_recognition's ``face_locations``, calling dlib directly.

We depend on the ``dlib-bin`` wheel and ``face_recognition_models`` rather than the
face_recognition package, whose metadata pins the dlib sdist (a 9-minute compile). The
detection is the same: HOG = ``get_frontal_face_detector()(img, upsample)``, CNN =
``cnn_face_detection_model_v1(<mmod model>)(img, upsample)`` and its ``.rect``; boxes are
(top, right, bottom, left) trimmed to the image as face_recognition's ``_rect_to_css`` and
``_trim_css_to_bounds`` do.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

Box = tuple[int, int, int, int]  # (top, right, bottom, left), face_recognition's "css" order

DETECTORS = ("hog", "cnn")
_DETECTORS: dict[str, Any] = {}  # built once per process: loading the CNN takes ~0.1 s


# ---------------------------------------------------------------- pure box logic


def rect_to_css(top: int, right: int, bottom: int, left: int) -> Box:
    """dlib rect sides -> (top, right, bottom, left) (face_recognition's _rect_to_css)."""
    return int(top), int(right), int(bottom), int(left)


def trim_css_to_bounds(box: Box, shape: tuple[int, ...]) -> Box:
    """Clip a box to the image (face_recognition's _trim_css_to_bounds, same arithmetic)."""
    top, right, bottom, left = box
    return max(top, 0), min(right, shape[1]), min(bottom, shape[0]), max(left, 0)


def expand_box(box: Box, margin: float, shape: tuple[int, ...]) -> Box:
    """Grow a box by ``margin`` x its height (top and bottom) and x its width (left and
    right), then clip to the image. margin 0 returns the tight box (the study)."""
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    top, right, bottom, left = box
    if margin:
        dy = int(round((bottom - top) * margin))
        dx = int(round((right - left) * margin))
        top, right, bottom, left = top - dy, right + dx, bottom + dy, left - dx
    return trim_css_to_bounds((top, right, bottom, left), shape)


def box_is_valid(box: Box) -> bool:
    """A box with positive height and width (a detection fully outside the image is not)."""
    top, right, bottom, left = box
    return bottom > top and right > left


def crop(img: np.ndarray, box: Box) -> np.ndarray:
    """The study's crop: ``img[top:bottom, left:right]``."""
    top, right, bottom, left = box
    return img[top:bottom, left:right]


def select_faces(boxes: list[Box], one_face_only: bool = True) -> tuple[list[Box], str]:
    """Boxes to keep from one frame, and why a frame was dropped ('' if kept):
    'no_face', or 'multi_face' when exactly one was required."""
    boxes = [b for b in boxes if box_is_valid(b)]
    if not boxes:
        return [], "no_face"
    if one_face_only and len(boxes) != 1:
        return [], "multi_face"
    return boxes, ""


# ---------------------------------------------------------------- dlib


def get_detector(model: str = "hog") -> Any:
    """The dlib detector for 'hog' or 'cnn', created on first use in this process."""
    if model not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {model!r}")
    if model not in _DETECTORS:
        import dlib  # heavy import kept out of module import time

        if model == "hog":
            _DETECTORS[model] = dlib.get_frontal_face_detector()
        else:
            _DETECTORS[model] = dlib.cnn_face_detection_model_v1(cnn_model_file())
    return _DETECTORS[model]


def cnn_model_file() -> str:
    """face_recognition_models' mmod CNN detector file, found without importing the package:
    its ``__init__`` imports ``pkg_resources``, which setuptools >= 81 no longer ships."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("face_recognition_models is not installed (pip install "
                                  "face_recognition_models); the CNN detector needs it")
    path = Path(spec.submodule_search_locations[0]) / "models" / "mmod_human_face_detector.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the CNN face detector's model file is missing")
    return str(path)


def face_locations(rgb: np.ndarray, upsample: int = 1, model: str = "hog") -> list[Box]:
    """Face boxes (top, right, bottom, left) in an RGB uint8 image, as face_recognition's
    ``face_locations(img, number_of_times_to_upsample=upsample, model=model)``."""
    detector = get_detector(model)
    rgb = np.ascontiguousarray(rgb)
    found = detector(rgb, upsample)
    rects = [d.rect for d in found] if model == "cnn" else list(found)
    return [trim_css_to_bounds(rect_to_css(r.top(), r.right(), r.bottom(), r.left()), rgb.shape)
            for r in rects]


def kept_boxes(rgb: np.ndarray, upsample: int, model: str, one_face_only: bool,
               margin: float) -> tuple[list[Box], str]:
    """The boxes `prepare` keeps in one RGB frame (detect, one-face rule, margin) and why the
    frame was dropped ('' if kept); `predict` calls this too, so the two cannot drift apart."""
    kept, why = select_faces(face_locations(rgb, upsample, model), one_face_only)
    return [expand_box(b, margin, rgb.shape) for b in kept], why


def iter_kept_faces(rgb: np.ndarray, upsample: int, model: str, one_face_only: bool,
                    margin: float, dropped: dict[str, int] | None = None
                    ) -> Iterator[tuple[Box, np.ndarray]]:
    """(box, RGB crop) of every face `prepare` keeps in one RGB frame; a dropped frame
    counts itself in `dropped[why]` ('no_face' or 'multi_face'). prepare stores these crops
    and predict scores them, so both walk the same loop."""
    boxes, why = kept_boxes(rgb, upsample, model, one_face_only, margin)
    if why and dropped is not None:
        dropped[why] = dropped.get(why, 0) + 1
    for box in boxes:
        yield tuple(int(v) for v in box), np.ascontiguousarray(crop(rgb, box))
