"""`--align dfb` (DeepfakeBench's landmark-aligned crop) and `--frame-rule floor`.

Geometry on synthetic points and images; prepare and face extraction on a small video of a
drawn face that dlib's HOG detector and 68-point predictor both find.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from helpers import dfb_reference, link_copy
from synthetic_media import make_video

from ensemble_dfd.config import ConfigError, PrepareConfig, dumps, load_config, load_recorded
from ensemble_dfd.data import align
from ensemble_dfd.data import frames as framelib
from ensemble_dfd.data.synthetic import draw_face
from ensemble_dfd.inference.verdict import Predictor, extract_faces
from ensemble_dfd.prepare import MARKER, main


def _similarity(theta: float, scale: float, shift: tuple[float, float]) -> np.ndarray:
    c, s = np.cos(theta) * scale, np.sin(theta) * scale
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def _invert(m: np.ndarray) -> np.ndarray:
    return cv2.invertAffineTransform(m)


# ---------------------------------------------------------------- geometry


def test_template_is_arcface_moved_scaled_and_shrunk() -> None:
    """ArcFace's 112-px points, +8 px in x, x 256/112, then a 1.3x crop: + 0.15 x 256 on
    each side, all x 256 / (1.3 x 256)."""
    arc = np.array(align.ARCFACE_112)
    want = ((arc + [8.0, 0.0]) * 256 / 112 + 0.15 * 256) / 1.3
    np.testing.assert_allclose(align.dfb_template(), want, atol=1e-9)
    np.testing.assert_allclose(align.dfb_template()[0], [96.8696, 120.4331], atol=1e-4)
    ref = dfb_reference().template((256, 256))  # DeepfakeBench's own float32 arithmetic
    np.testing.assert_allclose(align.dfb_template(), ref, atol=1e-4)


@pytest.mark.parametrize("theta, scale, shift", [
    (0.0, 1.0, (0.0, 0.0)), (0.3, 0.8, (12.0, -40.0)), (-1.2, 2.5, (300.0, 7.5)),
    (np.pi * 0.9, 0.05, (-3.0, 1000.0))])
def test_similarity_recovers_a_known_transform(theta, scale, shift) -> None:
    src = align.dfb_template() * 1.7 + [50.0, 20.0]
    m = _similarity(theta, scale, shift)
    dst = align.apply_matrix(m, src)
    np.testing.assert_allclose(align.similarity_matrix(src, dst), m, atol=1e-9)
    np.testing.assert_allclose(align.similarity_matrix(dst, src), _invert(m), atol=1e-7)


def test_similarity_is_umeyamas_least_squares_optimum() -> None:
    """Noisy and mirrored points: the same matrix as scikit-image's Umeyama estimate (as
    DeepfakeBench calls it), and no nearby similarity fits better."""
    umeyama = dfb_reference().umeyama
    rng = np.random.default_rng(0)
    for trial in range(20):
        src = rng.normal(100, 30, (5, 2))
        dst = rng.normal(128, 40, (5, 2))
        if trial % 2:
            dst[:, 0] = -dst[:, 0]  # a mirror image: still a rotation, never a reflection
        m = align.similarity_matrix(src, dst)
        np.testing.assert_allclose(m, umeyama(src, dst, True)[:2], atol=1e-8)
        assert np.linalg.det(m[:, :2]) >= 0
        err = ((align.apply_matrix(m, src) - dst) ** 2).sum()
        a, b, tx, ty = m[0, 0], m[1, 0], m[0, 2], m[1, 2]
        for delta in np.eye(4) * 1e-3:
            da, db, dx, dy = delta
            other = np.array([[a + da, -(b + db), tx + dx], [b + db, a + da, ty + dy]])
            assert ((align.apply_matrix(other, src) - dst) ** 2).sum() > err


def test_similarity_rejects_what_defines_no_transform() -> None:
    with pytest.raises(ValueError, match="two or more"):
        align.similarity_matrix(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match="two or more"):
        align.similarity_matrix(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="coincide"):
        align.similarity_matrix(np.ones((5, 2)), np.arange(10.0).reshape(5, 2))


def test_five_points_are_deepfakebenchs_indices() -> None:
    lm = np.stack([np.arange(68), np.arange(68) + 100], axis=1)
    np.testing.assert_array_equal(align.five_points(lm)[:, 0], [37, 44, 30, 49, 55])
    with pytest.raises(ValueError, match="68"):
        align.five_points(lm[:5])


def test_warp_puts_the_five_points_on_the_template() -> None:
    """Marks drawn in a frame where a known similarity puts the template come out of the
    256-px crop within 2 px of the template positions."""
    tmpl = align.dfb_template()
    frame_to_crop = _similarity(0.35, 0.6, (-40.0, 25.0))
    points = align.apply_matrix(_invert(frame_to_crop), tmpl)  # the five, in the frame
    frame = np.zeros((480, 640, 3), np.uint8)
    for x, y in points:
        cv2.circle(frame, (int(round(x)), int(round(y))), 4, (255, 255, 255), -1)
    crop, m = align.align_to_template(frame, points)
    assert crop.shape == (256, 256, 3)
    np.testing.assert_allclose(align.apply_matrix(m, points), tmpl, atol=1e-6)
    gray = crop[..., 0].astype(float)
    for x, y in tmpl:
        x0, y0 = int(x) - 8, int(y) - 8
        win = gray[y0:y0 + 17, x0:x0 + 17]
        ys, xs = np.mgrid[y0:y0 + 17, x0:x0 + 17]
        found = np.array([(xs * win).sum(), (ys * win).sum()]) / win.sum()
        assert np.linalg.norm(found - [x, y]) < 2.0


# ---------------------------------------------------------------- frame rule


@pytest.mark.parametrize("n, count", [(60, 5), (300, 32), (451, 32), (33, 32), (32, 32),
                                      (10, 32), (1, 32), (2, 2), (1000, 7), (2**31, 32)])
def test_floor_rule_is_linspace_dtype_int(n, count) -> None:
    want = sorted(set(np.linspace(0, n - 1, count, dtype=int).tolist()))
    assert framelib.spread_indices(n, 1, max_frames=count, frame_rule="floor") == want


def test_frame_rules_differ_where_rounding_does(tmp_path) -> None:
    assert framelib.spread_indices(60, 1, max_frames=5) == [0, 15, 30, 44, 59]
    assert framelib.spread_indices(60, 1, max_frames=5, frame_rule="floor") == [0, 14, 29, 44, 59]
    take = list(zip(range(5), framelib.iter_kept_indices(every_seconds=0.5, fps=29.97,
                                                         frame_rule="floor"), strict=False))
    assert [i for _, i in take] == [int(k * 0.5 * 29.97) for k in range(5)]
    video = make_video(tmp_path / "v.mp4", n_frames=60)
    got = list(framelib.iter_frames_spread(video, 5, frame_rule="floor"))
    assert [i for i, _ in got] == [0, 14, 29, 44, 59]
    for i, frame in got:  # each is the frame it says (frame i is gray level 4i)
        assert abs(float(frame.mean()) - 4 * i) < 8
    with pytest.raises(ValueError, match="frame_rule"):
        framelib.spread_indices(60, 1, frame_rule="nearest")


# ---------------------------------------------------------------- config


@pytest.mark.parametrize("prepare, message", [
    ({"align": "mtcnn"}, "prepare.align"),
    ({"frame_rule": "nearest"}, "prepare.frame_rule"),
    ({"align": "dfb", "margin": 0.15}, "margin"),
])
def test_config_refuses(prepare, message) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(None, {"prepare": prepare})


# ---------------------------------------------------------------- prepare and verdicts


@pytest.fixture(scope="module")
def face_video(tmp_path_factory) -> Path:
    """30 frames of a drawn face with a border (HOG finds it; the predictor places 68 points)."""
    d = tmp_path_factory.mktemp("alignvid")
    face = cv2.cvtColor(draw_face(np.random.default_rng(0), 128), cv2.COLOR_RGB2BGR)
    frame = cv2.copyMakeBorder(face, 64, 64, 64, 64, cv2.BORDER_REPLICATE)
    path = d / "videos" / "face.mp4"
    path.parent.mkdir()
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (256, 256))
    for i in range(30):
        writer.write(np.roll(frame, i % 3, axis=1))
    writer.release()
    return path


def test_prepare_aligns_records_and_verdicts_crop_the_same(face_video, tmp_path) -> None:
    out = tmp_path / "faces"
    assert main(["faces", "--videos", str(face_video.parent), "--out", str(out),
                 "--frames-per-video", "4", "--align", "dfb", "--frame-rule", "floor",
                 "--workers", "1"]) == 0
    params = json.loads((out / MARKER).read_text())["params"]
    assert (params["align"], params["frame_rule"]) == ("dfb", "floor")
    faces = pd.read_csv(out / "faces.csv")
    table = sorted(zip(faces["frame_index"], faces["path"], strict=True))
    assert [i for i, _ in table] == [0, 9, 19, 29]  # linspace(0, 29, 4, dtype=int)
    crops = [cv2.imread(str(out / p)) for _, p in table]
    assert all(c.shape == (256, 256, 3) for c in crops)
    # a run recording these settings crops new media exactly as prepare did
    cfg = tmp_path / "config.toml"
    cfg.write_text(dumps(load_config(None, {"prepare": {
        "align": "dfb", "frame_rule": "floor", "frames_per_video": 4}})))
    res = extract_faces(face_video, "video", load_recorded(cfg).prepare, "detect")
    assert [f.frame for f in res.faces] == [0, 9, 19, 29]
    for face, crop in zip(res.faces, crops, strict=True):
        np.testing.assert_array_equal(face.rgb, cv2.cvtColor(crop, cv2.COLOR_BGR2RGB))
    # the box crop is still the default, and its outputs' records do not change
    plain = extract_faces(face_video, "video", PrepareConfig(frames_per_video=4), "detect")
    assert all(f.rgb.shape[:2] == (f.box[2] - f.box[0], f.box[1] - f.box[3])
               for f in plain.faces)
    out2 = tmp_path / "plain"
    assert main(["faces", "--videos", str(face_video.parent), "--out", str(out2),
                 "--workers", "1"]) == 0
    params = json.loads((out2 / MARKER).read_text())["params"]
    assert "align" not in params and "frame_rule" not in params


def test_prepare_refuses_align_with_margin(face_video, tmp_path, capsys) -> None:
    assert main(["faces", "--videos", str(face_video.parent), "--out", str(tmp_path / "o"),
                 "--align", "dfb", "--margin", "0.15"]) == 2
    assert "margin" in capsys.readouterr().err


def test_predict_uses_the_runs_recorded_align(tiny_run, face_video, tmp_path, capsys) -> None:
    """A run whose [prepare] says align = "dfb", frame_rule = "floor": predict and the
    Predictor behind serve crop DeepfakeBench's way, on DeepfakeBench's frames."""
    from ensemble_dfd import predict

    run = link_copy(tiny_run, tmp_path / "run")
    path = run / "config.toml"
    cfg = load_recorded(path)
    prep = dataclasses.replace(cfg.prepare, align="dfb", frame_rule="floor",
                               frames_per_video=4)
    path.unlink()  # a hard link to the shared run's file: replace it, never write through
    path.write_text(dumps(dataclasses.replace(cfg, prepare=prep)))
    pred = Predictor(run, faces="detect")
    assert pred.describe()["prepare"]["align"] == "dfb"
    res = pred.extract(face_video, "video")
    assert [f.frame for f in res.faces] == [0, 9, 19, 29]
    assert all(f.rgb.shape == (256, 256, 3) for f in res.faces)
    assert predict.main([str(face_video), "--run", str(run), "--faces", "detect"]) == 0
    rec = json.loads(capsys.readouterr().out.splitlines()[0])
    assert rec["faces"] == 4 and rec["frames"] == 4


# ---------------------------------------------------------------- the recipe travels


def test_split_and_runs_take_the_faces_recipe(face_video, tmp_path) -> None:
    """prepare faces --align dfb -> split (no flag) -> the dataset records dfb -> a run
    trained on it records dfb too; a config naming another recipe is refused."""
    from ensemble_dfd.config import RunConfig
    from ensemble_dfd.prepare.recipe import RECORDED_BEFORE, recorded_crop, run_config_for

    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nface.mp4,Real\n")
    faces, data = tmp_path / "faces", tmp_path / "data"
    assert main(["faces", "--videos", str(face_video.parent), "--labels", str(labels),
                 "--out", str(faces), "--every", "10", "--align", "dfb", "--workers", "1"]) == 0
    assert main(["split", "--faces", str(faces), "--out", str(data),
                 "--ratios", "1,0,0"]) == 0
    assert recorded_crop(data) == {**RECORDED_BEFORE, "align": "dfb", "detector": "blazeface",
                                   "detect_size": 960}
    cfg, note = run_config_for(data / "manifest.csv", RunConfig())
    assert cfg.prepare.align == "dfb" and "prepare.align = 'dfb'" in note
    assert run_config_for(data, cfg) == (cfg, "")
    assert recorded_crop(tmp_path) is None  # not a prepare output: nothing to take
    assert run_config_for(tmp_path, RunConfig()) == (RunConfig(), "")
    plain = tmp_path / "plain"
    (faces / MARKER).unlink()  # faces of unknown recipe: the split records the default
    assert main(["split", "--faces", str(faces), "--out", str(plain), "--ratios", "1,0,0"]) == 0
    assert recorded_crop(plain) == {**RECORDED_BEFORE, "detector": "blazeface",
                                    "detect_size": 960}
    with pytest.raises(ConfigError, match="align"):
        run_config_for(plain, cfg)


def test_the_detection_settings_travel_with_the_faces(tmp_path) -> None:
    """A dataset made with HOG at the study's search gives its run HOG at 0; a config that
    names another detector is refused; a key missing from an old output reads as what
    that output did."""
    from ensemble_dfd.config import RunConfig
    from ensemble_dfd.prepare.recipe import RECORDED_BEFORE, recorded_crop, run_config_for

    data = tmp_path / "data"
    data.mkdir()
    params = {"detector": "hog", "upsample": 1, "margin": 0.15, "max_width": 640}
    (data / MARKER).write_text(json.dumps({"params": params}))
    assert recorded_crop(data) == {**RECORDED_BEFORE, "margin": 0.15}  # detect_size: 0
    cfg, note = run_config_for(data, RunConfig())
    p = cfg.prepare
    assert (p.detector, p.detect_size, p.margin) == ("hog", 0, 0.15)
    assert "prepare.detector = 'hog'" in note and "prepare.detect_size = 0" in note
    other = RunConfig(prepare=dataclasses.replace(RunConfig().prepare, detector="cnn"))
    with pytest.raises(ConfigError, match="detector"):
        run_config_for(data, other)
