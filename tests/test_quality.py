"""Image properties: blur, JPEG quality, size, brightness, contrast."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from ensemble_dfd.data import quality


def _texture(seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.random((120, 160, 3)) * 255).astype(np.uint8)


def test_blur_score_falls_monotonically_with_blur() -> None:
    img = _texture()
    scores = [quality.blur_score(img)]
    for sigma in (0.5, 1.0, 2.0, 4.0, 8.0):
        scores.append(quality.blur_score(cv2.GaussianBlur(img, (0, 0), sigma)))
    assert all(a > b for a, b in zip(scores, scores[1:], strict=False))


def test_flat_image_properties() -> None:
    img = np.full((30, 40, 3), 200, np.uint8)
    p = quality.image_properties(img)
    assert (p["width"], p["height"], p["area"]) == (40, 30, 1200)
    assert p["blur"] == 0.0 and p["contrast"] == 0.0
    assert p["brightness"] == pytest.approx(200.0)
    assert math.isnan(p["jpeg_quality"])


@pytest.mark.parametrize("q", [10, 35, 50, 75, 90, 95, 100])
def test_jpeg_quality_recovered_from_quantisation_tables(tmp_path, q: int) -> None:
    path = tmp_path / f"q{q}.jpg"
    cv2.imwrite(str(path), _texture(), [cv2.IMWRITE_JPEG_QUALITY, q])
    assert quality.jpeg_quality(path) == q
    rgb = cv2.cvtColor(cv2.imread(str(path)), cv2.COLOR_BGR2RGB)
    assert quality.image_properties(rgb, path=path)["jpeg_quality"] == q


def test_jpeg_quality_nan_for_non_jpeg(tmp_path) -> None:
    png = tmp_path / "a.png"
    cv2.imwrite(str(png), _texture())
    assert math.isnan(quality.jpeg_quality(png))
    assert math.isnan(quality.jpeg_quality(data=b"\xff\xd8\xff\xd9"))  # JPEG without DQT


def test_ijg_table_matches_libjpeg_at_50() -> None:
    # quality 50 = the standard table itself
    assert (quality.ijg_table(50) == quality.STD_LUMINANCE).all()
    assert (quality.ijg_table(100) == 1).all()


def test_properties_table_keeps_order_and_reports_bad_files(tmp_path) -> None:
    good = tmp_path / "good.jpg"
    cv2.imwrite(str(good), _texture(), [cv2.IMWRITE_JPEG_QUALITY, 80])
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    table = quality.properties_table([good, bad], workers=2)
    assert list(table["path"]) == [str(good), str(bad)]
    assert table.loc[0, "jpeg_quality"] == 80 and table.loc[0, "error"] == ""
    assert "bad.jpg" in table.loc[1, "error"] and math.isnan(table.loc[1, "blur"])
