"""`--align dfb` on real faces: the same crop as DeepfakeBench's own code on the same frame.

DeepfakeBench's ``extract_aligned_face_dlib`` is transcribed in benchmarks/dfb_reference.py
(not in the package); benchmarks/align_fidelity.py measures the same on all ten videos.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import dfb_reference

from ensemble_dfd.data import align
from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data import frames as framelib

pytestmark = pytest.mark.integration
# FF++ c23 at 640x480, 1280x720 and 1920x1080 (prepare's default caps the last two at 640)
VIDEOS = ("519.mp4", "004.mp4", "750_743.mp4")



def _ours(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """prepare's --align dfb crop of the one face (--max-width applied by the caller), its
    five points and the transform."""
    (box, crop), = facelib.iter_kept_faces(rgb, 1, "hog", True, 0.0, align="dfb")
    points = align.five_points(align.landmarks68(rgb, box))
    crop_again, m = align.align_to_template(rgb, points)
    np.testing.assert_array_equal(crop, crop_again)
    return crop, points, m


@pytest.mark.parametrize("name", VIDEOS)
def test_landmarks_land_where_deepfakebench_puts_them(wild: Path, name: str) -> None:
    dfb = dfb_reference()
    import dlib

    (_, bgr), = framelib.iter_frames_spread(wild / name, 1, 0, frame_rule="floor")
    ref = dfb.extract_aligned_face_dlib(dlib.get_frontal_face_detector(),
                                        align.get_predictor(), bgr)
    assert ref is not None
    ref_rgb = cv2.cvtColor(ref["crop_bgr"], cv2.COLOR_BGR2RGB)
    ref_pts = ref["points"].astype(np.float64)
    ref_placed = align.apply_matrix(ref["M"], ref_pts)
    tmpl = align.dfb_template()
    rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    # the full frame (--max-width 0): DeepfakeBench's crop, pixel for pixel
    crop, points, m = _ours(rgb)
    placed = align.apply_matrix(m, points)
    assert np.abs(crop.astype(int) - ref_rgb.astype(int)).mean() < 0.5
    assert np.linalg.norm(placed - ref_placed, axis=1).max() < 0.1
    # a similarity cannot put DeepfakeBench's eyelid and lip points exactly on a template of
    # eye centres and mouth corners: the same least-squares residual on both sides, and
    # the five points centred on the template's centre
    np.testing.assert_allclose(np.linalg.norm(placed - tmpl, axis=1),
                               np.linalg.norm(ref_placed - tmpl, axis=1), atol=0.01)
    assert np.linalg.norm(placed.mean(axis=0) - tmpl.mean(axis=0)) < 0.01

    # prepare's default width cap (640): landmarks found and the face warped from the
    # downscaled frame; the five points still land within 2 px of DeepfakeBench's placement
    capped = framelib.cap_width(rgb, 640)
    k = rgb.shape[1] / capped.shape[1]
    crop, points, m = _ours(capped)
    m_full = m.copy()
    m_full[:, :2] /= k  # from full-frame pixels
    assert np.linalg.norm(align.apply_matrix(m_full, ref_pts) - ref_placed, axis=1).max() < 2
    assert np.linalg.norm(align.apply_matrix(m, points) - ref_placed, axis=1).mean() < 2
