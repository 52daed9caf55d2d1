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

from ensemble_dfd.errors import UserError

Box = tuple[int, int, int, int]  # (top, right, bottom, left), face_recognition's "css" order

DETECTORS = ("hog", "cnn", "blazeface")
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


class DetectorUnavailable(UserError, RuntimeError):
    """A detector whose library or model file is not installed (one `error:` line)."""


# ---------------------------------------------------------------- dlib


def check_detector(model: str) -> None:
    """Build the detector now, so a missing library or weights file is one clear error
    before any video is read, not one failure per video."""
    try:
        get_detector(model)
    except (ImportError, OSError, RuntimeError) as exc:
        raise DetectorUnavailable(f"--detector {model}: cannot be loaded: {exc}") from None


def get_detector(model: str = "hog") -> Any:
    """The dlib detector for 'hog' or 'cnn', created on first use in this process."""
    if model not in DETECTORS:
        raise ValueError(f"detector must be one of {DETECTORS}, got {model!r}")
    if model not in _DETECTORS:
        if model == "hog":
            import dlib  # heavy import kept out of module import time

            _DETECTORS[model] = dlib.get_frontal_face_detector()
        elif model == "blazeface":
            from ensemble_dfd.data.blazeface import BlazeFace

            _DETECTORS[model] = BlazeFace()
        else:
            import dlib

            _DETECTORS[model] = dlib.cnn_face_detection_model_v1(cnn_model_file())
    return _DETECTORS[model]


def cnn_model_file() -> str:
    """face_recognition_models' mmod CNN detector file, found without importing the package:
    its ``__init__`` imports ``pkg_resources``, which setuptools >= 81 no longer ships."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("face_recognition_models is not installed (pip install "
                                  "face_recognition_models): it ships the CNN detector's "
                                  "weights")
    path = Path(spec.submodule_search_locations[0]) / "models" / "mmod_human_face_detector.dat"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the CNN face detector's weights file is missing "
                                "(reinstall face_recognition_models)")
    return str(path)


def detect_shape(height: int, width: int, detect_size: int,
                 max_scale: float = 2.0) -> tuple[int, int]:
    """(height, width) of the copy searched for faces: longer side ``detect_size``, aspect
    kept, enlarged at most ``max_scale`` times (the study's one upsampling: a 48-px image is
    searched at 96 px, not 960); ``detect_size`` 0 = the frame itself."""
    if detect_size < 0:
        raise ValueError(f"detect_size must be >= 0, got {detect_size}")
    longer = max(height, width)
    scale = min(detect_size / longer, max_scale) if longer else 1.0
    if detect_size == 0 or scale == 1.0:
        return height, width
    return max(1, int(round(height * scale))), max(1, int(round(width * scale)))


def map_box(box: Box, small: tuple[int, ...], shape: tuple[int, ...]) -> Box:
    """A box found on a resized copy of shape ``small`` mapped back to the frame of shape
    ``shape`` (each axis by its own exact factor, rounded), trimmed to the frame."""
    fy, fx = shape[0] / small[0], shape[1] / small[1]
    top, right, bottom, left = box
    return trim_css_to_bounds((int(round(top * fy)), int(round(right * fx)),
                               int(round(bottom * fy)), int(round(left * fx))), shape)


def detect_copy(rgb: np.ndarray, detect_size: int) -> np.ndarray:
    """The copy of a frame the detector searches (INTER_AREA to shrink, bilinear to grow)."""
    h, w = rgb.shape[:2]
    sh, sw = detect_shape(h, w, detect_size)
    if (sh, sw) == (h, w):
        return rgb
    import cv2  # kept out of module import time, like dlib

    interp = cv2.INTER_AREA if sh < h else cv2.INTER_LINEAR
    return cv2.resize(rgb, (sw, sh), interpolation=interp)


def find_faces(rgb: np.ndarray, upsample: int = 1, model: str = "hog",
               detect_size: int = 0) -> list[Box]:
    """Face boxes in an RGB frame. ``detect_size`` 0: the study's search (``upsample``
    times on the frame itself); PX > 0: one search (no further upsampling) on a copy whose
    longer side is PX, boxes mapped back to the frame."""
    if not detect_size or model == "blazeface":  # BlazeFace: its own 192-px input
        return face_locations(rgb, upsample, model)
    small = detect_copy(rgb, detect_size)
    return [map_box(b, small.shape, rgb.shape) for b in face_locations(small, 0, model)]


def face_locations(rgb: np.ndarray, upsample: int = 1, model: str = "hog") -> list[Box]:
    """Face boxes (top, right, bottom, left) in an RGB uint8 image, as face_recognition's
    ``face_locations(img, number_of_times_to_upsample=upsample, model=model)``."""
    detector = get_detector(model)
    rgb = np.ascontiguousarray(rgb)
    if model == "blazeface":  # its own 192-px input: upsample does not apply
        return [trim_css_to_bounds(b, rgb.shape) for b in detector(rgb)]
    found = detector(rgb, upsample)
    rects = [d.rect for d in found] if model == "cnn" else list(found)
    return [trim_css_to_bounds(rect_to_css(r.top(), r.right(), r.bottom(), r.left()), rgb.shape)
            for r in rects]


def kept_boxes(rgb: np.ndarray, upsample: int, model: str, one_face_only: bool,
               margin: float, detect_size: int = 0) -> tuple[list[Box], str]:
    """The boxes `prepare` keeps in one RGB frame (detect, one-face rule, margin) and why the
    frame was dropped ('' if kept); `predict` calls this too, so the two cannot drift apart."""
    kept, why = select_faces(find_faces(rgb, upsample, model, detect_size), one_face_only)
    return [expand_box(b, margin, rgb.shape) for b in kept], why


def iter_kept_faces(rgb: np.ndarray, upsample: int, model: str, one_face_only: bool,
                    margin: float, dropped: dict[str, int] | None = None,
                    detect_size: int = 0, align: str = "none"
                    ) -> Iterator[tuple[Box, np.ndarray]]:
    """(box, RGB crop) of every face `prepare` keeps in one RGB frame; a dropped frame
    counts itself in `dropped[why]` ('no_face' or 'multi_face'). prepare stores these crops
    and predict scores them, so both walk the same loop. ``align`` 'dfb': the crop is
    DeepfakeBench's landmark-aligned one (data.align), not the box."""
    boxes, why = kept_boxes(rgb, upsample, model, one_face_only, margin, detect_size)
    if why and dropped is not None:
        dropped[why] = dropped.get(why, 0) + 1
    for box in boxes:
        box = tuple(int(v) for v in box)
        if align == "none":
            yield box, np.ascontiguousarray(crop(rgb, box))
        else:
            from ensemble_dfd.data.align import aligned_crop

            yield box, aligned_crop(rgb, box, align)
