"""--detect-size: detection on a resized copy with boxes mapped back exactly; the detectors
(dlib HOG and CNN, BlazeFace) on the shared faces; a detector whose weights are absent is
one clear error; recorded runs keep the search they were prepared with."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from ensemble_dfd.config import ConfigError, load_config, load_recorded
from ensemble_dfd.data import faces as facelib

# (frame h, w, detect_size, box) with box edges on the copy's pixel grid: mapping is exact
EXACT = [(720, 1280, 640, (100, 900, 300, 700)),    # x 0.5
         (720, 1280, 960, (120, 880, 360, 640)),    # x 0.75
         (360, 640, 1280, (50, 301, 171, 207)),     # x 2 (upscaled copy)
         (1138, 640, 569, (380, 450, 440, 390))]    # x 0.5, portrait


def rect_frame(h: int, w: int, box: facelib.Box) -> np.ndarray:
    top, right, bottom, left = box
    img = np.zeros((h, w, 3), np.uint8)
    img[top:bottom, left:right] = 255
    return img


def rect_in(img: np.ndarray) -> facelib.Box:
    """The white rectangle's box (pixels >= half white, so a resized edge is found where
    the interpolation crosses 50%)."""
    ys, xs = np.nonzero(img[..., 0] >= 128)
    return int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1, int(xs.min())


@pytest.mark.parametrize(("h", "w", "size", "box"), EXACT)
def test_box_found_on_the_copy_maps_back_exactly(h, w, size, box, monkeypatch):
    frame = rect_frame(h, w, box)
    copy = facelib.detect_copy(frame, size)
    assert max(copy.shape[:2]) == size
    assert facelib.map_box(rect_in(copy), copy.shape, frame.shape) == box
    # and through find_faces, with a "detector" that reports the rectangle it is shown
    seen = []
    monkeypatch.setattr(facelib, "face_locations",
                        lambda img, up, model: seen.append((img.shape, up)) or [rect_in(img)])
    assert facelib.find_faces(frame, 1, "hog", size) == [box]
    assert seen == [(copy.shape, 0)]  # one search on the copy, no upsampling


def test_detect_size_zero_is_the_studys_search(monkeypatch):
    frame = rect_frame(360, 640, (10, 60, 50, 20))
    seen = []
    monkeypatch.setattr(facelib, "face_locations",
                        lambda img, up, model: seen.append((img.shape, up)) or [])
    facelib.find_faces(frame, 1, "hog", 0)
    assert seen == [((360, 640, 3), 1)]


def test_detect_shape_and_mapping_trim():
    assert facelib.detect_shape(720, 1280, 0) == (720, 1280)
    assert facelib.detect_shape(720, 1280, 960) == (540, 960)
    assert facelib.detect_shape(1920, 1080, 960) == (960, 540)
    assert facelib.detect_shape(48, 40, 960) == (96, 80)  # at most the study's 2x
    assert facelib.map_box((-3, 500, 300, 10), (270, 480), (540, 960)) == (0, 960, 540, 20)
    with pytest.raises(ValueError, match="detect_size"):
        facelib.detect_shape(10, 10, -1)


@pytest.mark.parametrize(("value", "ok"), [(0, True), (960, True), (80, True), (-1, False),
                                           (40, False)])
def test_detect_size_validated_in_the_config(value, ok):
    if ok:
        assert load_config(overrides={"prepare": {"detect_size": value}}).prepare.detect_size \
            == value
    else:
        with pytest.raises(ConfigError, match="prepare.detect_size"):
            load_config(overrides={"prepare": {"detect_size": value}})


def test_a_run_records_its_detection_settings_for_verdicts(tmp_path):
    from ensemble_dfd.config import dumps

    cfg = load_config(overrides={"prepare": {"detect_size": 800, "detector": "blazeface"}})
    (tmp_path / "config.toml").write_text(dumps(cfg))
    p = load_recorded(tmp_path / "config.toml").prepare  # what Predictor reads
    assert (p.detect_size, p.detector) == (800, "blazeface")


def test_a_run_recorded_before_the_key_keeps_the_studys_search(tmp_path):
    old = tmp_path / "config.toml"
    old.write_text('[prepare]\nevery = 120\nupsample = 1\n')
    assert load_recorded(old).prepare.detect_size == 0
    new = tmp_path / "new.toml"
    new.write_text('[prepare]\ndetect_size = 800\n')
    assert load_recorded(new).prepare.detect_size == 800


def test_absent_cnn_weights_are_one_clear_error(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None
                        if name == "face_recognition_models" else real(name, *a))
    monkeypatch.setattr(facelib, "_DETECTORS", {})
    with pytest.raises(facelib.DetectorUnavailable, match="--detector cnn: .*not installed"):
        facelib.check_detector("cnn")


def test_absent_blazeface_weights_are_one_clear_error(tmp_path, monkeypatch):
    from ensemble_dfd.data import blazeface

    monkeypatch.setattr(blazeface, "WEIGHTS", tmp_path / "gone.onnx")
    monkeypatch.setattr(facelib, "_DETECTORS", {})
    with pytest.raises(facelib.DetectorUnavailable,
                       match="--detector blazeface: .*gone.onnx: BlazeFace's weights file is "
                             "missing"):
        facelib.check_detector("blazeface")


def test_prepare_refuses_an_absent_detector_before_reading_videos(tmp_path, monkeypatch,
                                                                    capsys):
    from synthetic_media import make_video

    from ensemble_dfd.data import blazeface
    from ensemble_dfd.prepare import main as prepare_main

    (tmp_path / "v").mkdir()
    make_video(tmp_path / "v" / "a.mp4", n_frames=5)
    monkeypatch.setattr(blazeface, "WEIGHTS", tmp_path / "gone.onnx")
    monkeypatch.setattr(facelib, "_DETECTORS", {})
    code = prepare_main(["faces", "--videos", str(tmp_path / "v"), "--out",
                         str(tmp_path / "out"), "--workers", "1"])  # the default: blazeface
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1].startswith("error: --detector blazeface:")
    assert not (tmp_path / "out" / "faces.csv").exists()


@pytest.mark.integration
@pytest.mark.parametrize("setting", ["hog@960", "blazeface@0", "cnn@0"])
def test_each_detector_finds_the_shared_faces(wild, setting):
    """On frames of three shared videos, every face the study's search finds (HOG,
    upsample 1, 640 px) is found by the detector (IoU >= 0.5)."""
    from ensemble_dfd.data.frames import iter_frames

    model, size = setting.split("@")
    # landscape videos: on portrait DFDC frames (640x1138) a 960-px copy shrinks a 63-px
    # face below HOG's 80-px window (benchmarks/faces_speed.py counts those misses)
    names = ["519.mp4"] if model == "cnn" else [
        "519.mp4", "750_743.mp4", "widuwuoiur.mp4"]
    frames = [f for n in names for _, f in list(iter_frames(wild / n, every=150))[:1]]
    for bgr in frames:
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        study = facelib.find_faces(rgb, 1, "hog", 0)
        got = facelib.find_faces(rgb, 0 if model == "cnn" else 1, model, int(size))
        assert study
        for box in study:
            assert max(iou(box, g) for g in got) >= 0.5, (setting, box, got)


def iou(a: facelib.Box, b: facelib.Box) -> float:
    t, r, btm, lf = max(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, r - lf) * max(0, btm - t)
    area = lambda x: (x[1] - x[3]) * (x[2] - x[0])  # noqa: E731
    return inter / (area(a) + area(b) - inter)
