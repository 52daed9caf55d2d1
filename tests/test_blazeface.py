"""The packaged BlazeFace weights: the file described in data/weights/README.md, and the
decoding around it (anchors, letterbox, weighted NMS) on known inputs."""

from __future__ import annotations

import hashlib

import numpy as np

from ensemble_dfd.data import blazeface


def test_the_packaged_weights_are_the_documented_conversion():
    digest = hashlib.sha256(blazeface.onnx_file().read_bytes()).hexdigest()
    readme = (blazeface.WEIGHTS.parent / "README.md").read_text()
    assert digest == "4c758c25ec483d6484e0e1a5b7f62903d3016090ea8f69911a7bda2261279c94"
    assert digest in readme and (blazeface.WEIGHTS.parent / "LICENSE-Apache-2.0.txt").is_file()


def test_letterbox_centres_the_frame_and_reports_the_padding():
    x, (left, top, right, bottom) = blazeface.letterbox(np.full((96, 192, 3), 255, np.uint8))
    assert x.shape == (1, 192, 192, 3) and (left, right) == (0.0, 0.0)
    assert (top, bottom) == (0.25, 0.25)
    assert x[0, 48:144].min() == 1.0 and x[0, :48].max() == -1.0


def test_weighted_nms_merges_a_cluster_into_its_score_weighted_mean():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.12, 0.1, 0.32, 0.3], [0.6, 0.6, 0.8, 0.8]])
    scores = np.array([0.9, 0.6, 0.7])
    out = blazeface.weighted_nms(boxes, scores)
    assert len(out) == 2
    np.testing.assert_allclose(out[0], (boxes[0] * 0.9 + boxes[1] * 0.6) / 1.5)
    np.testing.assert_allclose(out[1], boxes[2])


def test_no_face_in_a_flat_frame():
    assert blazeface.BlazeFace()(np.full((240, 320, 3), 128, np.uint8)) == []
