"""`ensemble_dfd.predict` and the verdict core, on the tiny trained run and synthetic media."""

from __future__ import annotations

import csv
import json
import shutil
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import write_crop, write_face_video
from synthetic_media import make_image, make_video, truncate

from ensemble_dfd import predict
from ensemble_dfd.config import PrepareConfig
from ensemble_dfd.inference.verdict import (
    InputError,
    RunError,
    aggregate,
    choose_learner,
    expand_inputs,
    extract_faces,
    sniff,
)


def run_cli(argv: list[str], capsys) -> tuple[int, list[dict], str]:
    code = predict.main(argv)
    out, err = capsys.readouterr()
    records = [json.loads(line) for line in out.splitlines() if line.strip()]
    return code, records, err


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("media")
    return {
        "crop1": write_crop(d / "crop1.jpg", 1),
        "crop2": write_crop(d / "crop2.png", 2, 56),
        "crop3": write_crop(d / "crop3.jpg", 3, 40),
        "video": write_face_video(d / "face.mp4"),
        "flat_video": make_video(d / "flat.mp4", n_frames=30, size=(96, 80)),
        "big_noface": make_image(d / "noface.jpg", size=(400, 300)),
        "text": _write(d / "renamed.jpg", b"just some text, not an image\n" * 10),
        "truncated": truncate(make_video(d / "cut.mp4", n_frames=60), 0.4),
    }


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# ---------------------------------------------------------------- pure parts


@pytest.mark.parametrize("head, kind", [
    (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 8, "image"),
    (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image"),
    (b"BM" + b"\0" * 20, "image"),
    (b"\x00\x00\x00\x20ftypisom\x00\x00", "video"),
    (b"\x1a\x45\xdf\xa3\x01\x00", "video"),
    (b"RIFF\x00\x00\x00\x00AVI LIST", "video"),
    (b"%PDF-1.4\n", None),
    (b"hello world, this is text", None),
    (b"", None),
])
def test_sniff_by_content(head, kind):
    assert sniff(head) == kind


@pytest.mark.parametrize("p, how, score, verdict", [
    ([0.9, 0.8, 0.1], "mean", 0.6, "real"),
    ([0.5, 0.5], "mean", 0.5, "fake"),  # ties go to fake (real iff > threshold)
    ([0.9, 0.8, 0.1], "fake_fraction", 2 / 3, "real"),
    ([0.9, 0.1], "fake_fraction", 0.5, "fake"),
    ([0.9, 0.8, 0.1], "max_fake", 0.1, "fake"),
    ([0.9, 0.7], "max_fake", 0.7, "real"),
])
def test_aggregate(p, how, score, verdict):
    s, v = aggregate(np.array(p), 0.5, how)
    assert s == pytest.approx(score) and v == verdict


def test_aggregate_rejects_bad_input():
    with pytest.raises(ValueError, match="no faces"):
        aggregate(np.array([]), 0.5)
    with pytest.raises(ValueError, match="aggregate must be one of"):
        aggregate(np.array([0.2]), 0.5, "median")


def test_choose_learner_rules():
    from ensemble_dfd.rundir import StackInfo

    models, saved = ["M2", "M6"], ["soft_vote", "stack_lr"]
    assert choose_learner(None, None, models, saved) == ("learner", "soft_vote")
    assert choose_learner("auto", StackInfo(recommended="stack_lr"), models, saved) == (
        "learner", "stack_lr")
    assert choose_learner(None, None, models, []) == ("mean", "soft_vote_builtin")
    assert choose_learner("M6", None, models, saved) == ("model", "M6")
    assert choose_learner("best_single", StackInfo(best_single="M2"), models, saved) == (
        "model", "M2")
    # no recommendation recorded: the stack's soft_vote, else its first learner
    assert choose_learner(None, StackInfo(learners=["stack_lr", "soft_vote"]), models,
                          saved) == ("learner", "soft_vote")
    assert choose_learner(None, StackInfo(learners=["stack_lr"]), models, saved) == (
        "learner", "stack_lr")
    with pytest.raises(RunError, match="neither a trained model"):
        choose_learner("nope", None, models, saved)
    with pytest.raises(RunError, match="best_single"):
        choose_learner("best_single", None, models, saved)


def test_expand_inputs(tmp_path, media):
    folder = tmp_path / "f"
    folder.mkdir()
    shutil.copy(media["crop1"], folder / "a.jpg")
    shutil.copy(media["video"], folder / "clip.bin")  # a misleading name: content decides
    (folder / "labels.csv").write_text("path,label\n")
    items, notes = expand_inputs([folder])
    assert [(p.name, k) for p, k in items] == [("a.jpg", "image"), ("clip.bin", "video")]
    assert any("labels.csv" in n for n in notes)
    with pytest.raises(InputError, match="renamed.jpg: not an image or video"):
        expand_inputs([media["text"]])
    with pytest.raises(InputError, match="no such file"):
        expand_inputs([tmp_path / "missing.mp4"])


def test_extract_faces_modes(media):
    p = PrepareConfig()
    whole = extract_faces(media["crop1"], "image", p, "as-is")
    assert len(whole.faces) == 1 and whole.faces[0].box is None
    assert whole.faces[0].rgb.shape == (48, 48, 3)
    # a big image without a face is never taken whole, even in auto mode
    assert extract_faces(media["big_noface"], "image", p, "auto").faces == []
    vid = extract_faces(media["video"], "video", p, "as-is")
    assert [f.frame for f in vid.faces] == [0, 120, 240]
    with pytest.raises(InputError, match="cut.mp4"):
        extract_faces(media["truncated"], "video", p, "detect")


# ---------------------------------------------------------------- the CLI on a real run


def test_cli_crops_json(tiny_run, media, capsys):
    code, recs, err = run_cli([str(media["crop1"]), str(media["crop2"]), "--run",
                               str(tiny_run), "--faces", "as-is"], capsys)
    assert code == 0, err
    assert len(recs) == 2
    for r in recs:
        assert {"input", "faces", "p_real", "verdict", "models", "face_results"} <= set(r)
        assert r["faces"] == 1 and r["verdict"] in ("real", "fake")
        assert 0.0 <= r["p_real"] <= 1.0
        assert set(r["models"]) == {"M2", "M6"}
        # the stack's recommendation (best out-of-fold validation accuracy) is the default
        assert r["learner"] == json.loads((tiny_run / "stack" / "stack.json").read_text())[
            "recommended"]
        assert set(r["face_results"][0]["models"]) == {"M2", "M6"}
        assert r["verdict"] == ("real" if r["p_real"] > r["threshold"] else "fake")


def test_cli_video_faces_and_aggregates(tiny_run, media, capsys):
    base = [str(media["video"]), "--run", str(tiny_run), "--faces", "as-is"]
    code, (mean,), _ = run_cli(base, capsys)
    assert code == 0 and mean["kind"] == "video"
    assert mean["faces"] == 3 and len(mean["face_results"]) == 3
    per_face = [f["p_real"] for f in mean["face_results"]]
    assert mean["p_real"] == pytest.approx(np.mean(per_face), abs=1e-5)
    code, (mx,), _ = run_cli([*base, "--aggregate", "max_fake"], capsys)
    assert mx["p_real"] == pytest.approx(min(per_face), abs=1e-6)
    code, (ff,), _ = run_cli([*base, "--aggregate", "fake_fraction"], capsys)
    assert ff["p_real"] == pytest.approx(1 - mean["fake_fraction"], abs=1e-6)


def test_cli_single_model_learner(tiny_run, media, capsys):
    code, (r,), _ = run_cli([str(media["crop1"]), "--run", str(tiny_run), "--faces", "as-is",
                             "--learner", "M6"], capsys)
    assert code == 0 and r["learner"] == "M6"
    assert r["p_real"] == pytest.approx(r["models"]["M6"]["p_real"], abs=1e-6)


def test_batching_one_model_call_for_all_inputs(tiny_run, media, monkeypatch):
    """Faces of all inputs go through each model in one call, with the same results as
    one input at a time."""
    from ensemble_dfd.inference.verdict import Predictor
    from ensemble_dfd.training import train

    pred = Predictor(tiny_run, faces="as-is")
    items = [(media["crop1"], "image"), (media["crop2"], "image"), (media["video"], "video")]
    alone = [pred.predict_paths([it])[0][0]["p_real"] for it in items]
    calls = []
    real = train.predict_logits
    monkeypatch.setattr(train, "predict_logits",
                        lambda m, x, bs=64: calls.append(len(x)) or real(m, x, bs))
    together, _ = pred.predict_paths(items)
    assert calls == [5, 5]  # 1 + 1 + 3 faces, one call per model
    assert [r["p_real"] for r in together] == pytest.approx(alone, abs=1e-5)


def test_cli_csv_to_file(tiny_run, media, tmp_path, capsys):
    out = tmp_path / "res.csv"
    code = predict.main([str(media["crop1"]), str(media["crop3"]), "--run", str(tiny_run),
                         "--faces", "as-is", "--format", "csv", "--output", str(out)])
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert len(rows) == 2
    assert {"input", "faces", "p_real", "verdict", "p_real_M2", "p_real_M6"} <= set(rows[0])
    assert capsys.readouterr().out == ""


def test_cli_exit_3_no_face_others_reported(tiny_run, media, capsys):
    code, recs, err = run_cli([str(media["crop1"]), str(media["flat_video"]), "--run",
                               str(tiny_run)], capsys)
    assert code == 3
    by_name = {Path(r["input"]).name: r for r in recs}
    assert by_name["crop1.jpg"]["verdict"] in ("real", "fake")  # auto: small crop used whole
    assert by_name["flat.mp4"]["status"] == "no_face" and by_name["flat.mp4"]["faces"] == 0
    assert by_name["flat.mp4"]["verdict"] is None
    assert "flat.mp4" in err and "no face" in err


@pytest.mark.parametrize("args_fn, message", [
    (lambda m, run, tmp: [str(tmp / "nope.mp4"), "--run", str(run)], "nope.mp4: no such file"),
    (lambda m, run, tmp: [str(m["text"]), "--run", str(run)],
     "renamed.jpg: not an image or video"),
    (lambda m, run, tmp: [str(m["crop1"]), "--run", str(tmp)], "no config.toml"),
    (lambda m, run, tmp: [str(m["crop1"]), "--run", str(run), "--learner", "zzz"],
     "--learner zzz"),
    (lambda m, run, tmp: [str(m["crop1"]), "--run", str(run), "--aggregate", "median"],
     "invalid choice"),
])
def test_cli_exit_2_bad_input_or_arguments(tiny_run, media, tmp_path, capsys, args_fn,
                                           message):
    code = predict.main(args_fn(media, tiny_run, tmp_path))
    err = capsys.readouterr().err
    assert code == 2
    assert message in err


def test_cli_exit_2_truncated_video_others_reported(tiny_run, media, capsys):
    code, recs, err = run_cli([str(media["crop1"]), str(media["truncated"]), "--run",
                               str(tiny_run), "--faces", "as-is"], capsys)
    assert code == 2
    assert [r["status"] for r in recs] == ["ok", "bad_input"]
    assert "cut.mp4" in err


def test_predict_parser_does_not_import_tensorflow():
    import subprocess
    import sys

    code = ("import sys; from ensemble_dfd import predict; predict.build_parser(); "
            "sys.exit('tensorflow' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------- real videos


@pytest.mark.integration
def test_wild_videos_one_verdict_each(tiny_run, wild, capsys):
    """Mechanics on real videos (tiny synthetic models: the verdicts mean nothing)."""
    code, recs, err = run_cli([str(wild), "--run", str(tiny_run)], capsys)
    videos = sorted(p.name for p in wild.glob("*.mp4"))
    assert sorted(Path(r["input"]).name for r in recs) == videos
    assert code in (0, 3), err
    for r in recs:
        assert r["kind"] == "video" and r["faces"] == len(r["face_results"])
        assert r["frames"] >= 1
        if r["faces"]:
            assert r["verdict"] in ("real", "fake") and 0 <= r["p_real"] <= 1
        else:
            assert r["status"] == "no_face"
    assert sum(r["faces"] > 0 for r in recs) >= len(videos) // 2


def test_combiners_are_callables_x_to_z():
    from types import SimpleNamespace

    from ensemble_dfd.inference.verdict import MeanProbability, ModelColumn, SavedLearner

    X = np.array([[2.0, -1.0, 0.5], [-3.0, 0.2, 1.0]])
    p = (1 / (1 + np.exp(-X))).mean(axis=1)
    assert MeanProbability()(X) == pytest.approx(np.log(p / (1 - p)))
    assert MeanProbability().threshold == 0.0
    col = ModelColumn(1, threshold=0.3)
    assert list(col(X)) == [-1.0, 0.2] and col.threshold == 0.3
    # a saved learner fit on models (M3, M1) gets those columns in its own order
    seen = []
    fake = SimpleNamespace(threshold=-0.5, decision=lambda A: seen.append(A) or A.sum(axis=1))
    z = SavedLearner(fake, [2, 0])(X)
    assert np.array_equal(seen[0], X[:, [2, 0]]) and list(z) == [2.5, -2.0]
    assert SavedLearner(fake, [2, 0]).threshold == -0.5


# ---------------------------------------------------------------- hostile and mixed input


def test_cli_mixed_inputs_each_get_a_record(tiny_run, media, tmp_path):
    """Good inputs get verdicts whatever else is on the command line; each bad one gets a
    bad_input record with the reason; the exit code summarises; stderr holds only our own
    lines (no TensorFlow/OpenCV chatter) without --verbose. Run as a real process."""
    import subprocess
    import sys

    from hostile_media import write_png_bomb

    empty = _write(tmp_path / "empty.mp4", b"")
    one = tmp_path / "one.png"
    cv2.imwrite(str(one), np.zeros((1, 1, 3), np.uint8))
    noise = tmp_path / "noise.png"
    cv2.imwrite(str(noise), (np.random.default_rng(0).random((200, 200, 3)) * 255
                             ).astype(np.uint8))
    bomb = write_png_bomb(tmp_path / "bomb.png")
    inputs = [media["crop1"], tmp_path / "missing.jpg", empty, media["text"], bomb, noise,
              one, media["video"], media["truncated"]]
    proc = subprocess.run([sys.executable, "-m", "ensemble_dfd.predict", *map(str, inputs),
                           "--run", str(tiny_run)], capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == predict.EXIT_BAD_INPUT, proc.stderr
    recs = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [Path(r["input"]).name for r in recs] == [p.name for p in inputs]
    assert [r["status"] for r in recs] == ["ok", "bad_input", "bad_input", "bad_input",
                                           "bad_input", "no_face", "no_face", "ok",
                                           "bad_input"]
    for r in recs:
        assert (r["verdict"] in ("real", "fake")) == (r["status"] == "ok")
    reasons = [r.get("error", "") for r in recs]
    assert "no such file" in reasons[1] and "empty file" in reasons[2]
    assert "not an image or video" in reasons[3]
    assert "20000x20000 px is over the limit" in reasons[4]
    assert "cut.mp4" in reasons[8]
    assert not recs[5]["whole_image"] and not recs[6]["whole_image"]
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith(("error: ", "no face: ", "warning: ", "note: "))
                         for ln in lines), proc.stderr


def test_cli_exit_codes_documented():
    text = predict.build_parser().format_help()
    for words in ("Exit codes", "0 every input got a verdict", "3 no face", "2 at least one bad",
                  "--verbose", "--max-frames", "--max-megapixels", "--timeout"):
        assert words in text, words


def test_cli_and_server_both_refuse_a_video_cut_short(tiny_run, tmp_path, capsys):
    from fastapi.testclient import TestClient
    from hostile_media import write_cut_avi

    from ensemble_dfd.serve import create_app

    cut = write_cut_avi(tmp_path / "cut.avi")
    code, (rec,), err = run_cli([str(cut), "--run", str(tiny_run), "--faces", "as-is"],
                                capsys)
    assert code == predict.EXIT_BAD_INPUT and rec["status"] == "bad_input"
    assert "truncated" in rec["error"] and "truncated" in err
    app = create_app(tiny_run, faces="as-is", warm=False)
    with TestClient(app, base_url="http://127.0.0.1:8000") as c, cut.open("rb") as fh:
        r = c.post("/api/predict", files={"file": ("cut.avi", fh)})
    assert r.status_code == 422 and "truncated" in r.json()["detail"]


def _break_learner(run: Path) -> str:
    """The run's default learner file replaced by an old-style pickle pair."""
    from ensemble_dfd.rundir import Run

    name = Run(run).stack.primary or "soft_vote"
    f = run / "stack" / "learners" / f"{name}.json"
    doc = json.loads(f.read_text())
    f.unlink()
    f.write_text(json.dumps({**doc, "format": 1}))
    (f.with_suffix(".joblib")).write_bytes(b"\x80\x04pickle")
    return "a pickled meta-learner"


def _break_keras(run: Path) -> str:
    for d in (run / "models").iterdir():
        for f in ("model.onnx", "model.onnx.json"):
            (d / f).unlink(missing_ok=True)
        (d / "model.keras").unlink()
        (d / "model.keras").write_bytes(b"PK\x03\x04 not a zip at all")
    return "cannot be loaded as a Keras model"


@pytest.mark.parametrize("breaker", [_break_learner, _break_keras])
def test_a_tampered_run_is_one_error_line_cli_and_server(tiny_run, media, tmp_path, breaker,
                                                         capsys):
    """Issue 26 (5): every load failure of a run's files is one `error:` line, exit 2, for
    `predict` and `serve` alike (the learner is never unpickled)."""
    from helpers import link_copy

    from ensemble_dfd import serve

    run = link_copy(tiny_run, tmp_path / "run")
    words = breaker(run)
    code, records, err = run_cli([str(media["crop1"]), "--run", str(run)], capsys)
    assert code == 2 and records == []
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], err
    assert serve.main(["--run", str(run), "--port", "1"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and words in lines[0], lines


def test_cli_an_image_decode_past_the_timeout_is_bad_input(tiny_run, media, capsys,
                                                           monkeypatch):
    """Issue 26: an image decode runs in a worker process killed at the input's deadline
    (here a worker made to sleep, standing in for a file that decodes for minutes)."""
    from ensemble_dfd.data import decode_worker

    code, recs, _ = run_cli([str(media["crop1"]), "--run", str(tiny_run)], capsys)
    assert code == 0 and recs[0]["decoder"] == "worker"
    monkeypatch.setattr(decode_worker, "TEST_DELAY_S", 30.0)
    t0 = time.monotonic()
    code, recs, err = run_cli([str(media["crop1"]), str(media["video"]), "--run",
                               str(tiny_run), "--timeout", "1"], capsys)
    assert time.monotonic() - t0 < 20
    assert code == 2 and [r["status"] for r in recs] == ["bad_input", "ok"]
    assert recs[0]["error"].endswith("crop1.jpg: image took longer than the limit of 1 s")
    assert "crop1.jpg" in err
