"""Box handling (pure) and the dlib detector wrapper."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_dfd.data import faces


def test_css_order_and_trim_match_face_recognition() -> None:
    assert faces.rect_to_css(10, 90, 80, 20) == (10, 90, 80, 20)
    # face_recognition's _trim_css_to_bounds: max(top,0), min(right,w), min(bottom,h), max(left,0)
    assert faces.trim_css_to_bounds((-5, 130, 110, -3), (100, 120, 3)) == (0, 120, 100, 0)
    assert faces.trim_css_to_bounds((10, 50, 60, 20), (100, 120)) == (10, 50, 60, 20)


def test_margin_zero_is_the_tight_box() -> None:
    assert faces.expand_box((10, 50, 60, 20), 0.0, (100, 100)) == (10, 50, 60, 20)


def test_margin_grows_each_side_and_clips() -> None:
    # box 50 high, 30 wide: +10% -> 5 px top/bottom, 3 px left/right
    assert faces.expand_box((10, 50, 60, 20), 0.1, (100, 100)) == (5, 53, 65, 17)
    # near the border the grown box is clipped to the image
    assert faces.expand_box((2, 98, 90, 5), 0.5, (95, 100)) == (0, 100, 95, 0)


def test_negative_margin_refused() -> None:
    with pytest.raises(ValueError, match="margin"):
        faces.expand_box((0, 10, 10, 0), -0.1, (20, 20))


def test_crop_is_top_bottom_left_right() -> None:
    img = np.arange(100 * 120).reshape(100, 120)
    out = faces.crop(img, (10, 50, 60, 20))
    assert out.shape == (50, 30)
    assert out[0, 0] == img[10, 20]


@pytest.mark.parametrize(("boxes", "one", "kept", "why"), [
    ([], True, 0, "no_face"),
    ([(0, 10, 10, 0)], True, 1, ""),
    ([(0, 10, 10, 0), (20, 40, 40, 20)], True, 0, "multi_face"),
    ([(0, 10, 10, 0), (20, 40, 40, 20)], False, 2, ""),
    ([(5, 10, 5, 0)], True, 0, "no_face"),  # empty box after trimming is not a face
])
def test_select_faces(boxes: list, one: bool, kept: int, why: str) -> None:
    got, reason = faces.select_faces(boxes, one)
    assert len(got) == kept and reason == why


def test_detector_is_cached_and_validated() -> None:
    assert faces.get_detector("hog") is faces.get_detector("hog")
    with pytest.raises(ValueError, match="detector"):
        faces.get_detector("haar")


@pytest.mark.parametrize("model", ["hog", "cnn"])
def test_no_face_in_a_flat_image(model: str) -> None:
    img = np.full((80, 100, 3), 128, np.uint8)
    assert faces.face_locations(img, upsample=0, model=model) == []
