"""`python -m ensemble_dfd.prepare` end to end on synthetic media, bad inputs included.

Synthetic frames hold no real face, so most tests swap dlib for a stand-in detector whose
answer depends on the frame's brightness (frame i is gray level 4i): below 10 no face,
below 90 one face, brighter two.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_media import make_image, make_video, truncate

from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data.dataset import load_dataset
from ensemble_dfd.prepare import MARKER, main


@pytest.fixture
def fake_detector(monkeypatch) -> list[int]:
    calls: list[int] = []

    def detect(rgb: np.ndarray, upsample: int = 1, model: str = "hog") -> list:
        calls.append(1)
        level = float(rgb.mean())
        if level < 10:
            return []
        box = facelib.trim_css_to_bounds((10, 70, 70, 10), rgb.shape)
        return [box] if level < 90 else [box, (0, 5, 5, 0)]

    monkeypatch.setattr(facelib, "face_locations", detect)
    return calls


def write_labels(path: Path, rows: list[tuple[str, str, str]]) -> Path:
    pd.DataFrame(rows, columns=["path", "label", "source"]).to_csv(path, index=False)
    return path


@pytest.fixture
def videos(tmp_path) -> tuple[Path, Path]:
    """Good videos and every kind of bad input, with a labels CSV beside them."""
    d = tmp_path / "videos"
    d.mkdir()
    for name in ("r1", "r1_x", "f2", "r3"):
        make_video(d / f"{name}.mp4", n_frames=30)
    (d / "broken.mp4").write_bytes(b"garbage" * 50)
    truncate(make_video(d / "cut.mp4", n_frames=30))
    (d / "notes.txt").write_text("not a video")
    make_video(d / "unlabelled.mp4", n_frames=12)
    labels = write_labels(d / "labels.csv", [
        ("r1.mp4", "Real", "s"), ("r1_x.mp4", "Fake", "s"), ("f2.mp4", "Fake", "t"),
        ("r3.mp4", "real", "s"), ("broken.mp4", "Fake", "s"), ("cut.mp4", "Real", "s"),
        ("missing.mp4", "Fake", "s"), ("f2.mp4", "Maybe", "s"),
    ])
    return d, labels


def run_all(videos: Path, labels: Path, out: Path, *extra: str) -> int:
    return main(["all", "--videos", str(videos), "--labels", str(labels), "--out", str(out),
                 "--every", "10", "--workers", "1", "--ratios", "0.5,0.5,0", *extra])


def test_all_end_to_end_with_bad_inputs(tmp_path, videos, fake_detector, capsys) -> None:
    d, labels = videos
    out = tmp_path / "ds"
    assert run_all(d, labels, out) == 0
    err = capsys.readouterr().err
    for name in ("broken.mp4", "cut.mp4", "notes.txt", "unlabelled.mp4", "missing.mp4",
                 "Maybe"):
        assert name in err, name
    report = json.loads((out / "report.json").read_text())
    reported = " ".join(p["path"] + " " + p["reason"] for p in report["problems"])
    for name in ("broken.mp4", "cut.mp4", "notes.txt", "unlabelled.mp4", "missing.mp4"):
        assert name in reported, name

    log = pd.read_csv(out / "faces" / "face_log.csv", dtype={"video": str}).set_index("video")
    assert set(log.index) == {"r1", "r1_x", "f2", "r3", "broken", "cut"}
    assert log.loc["r1", ["frames_read", "frames_kept", "faces_saved"]].tolist() == [30, 3, 2]
    assert log.loc["r1", "dropped_no_face"] == 1  # frame 0 is dark: no face
    assert log.loc["broken", "status"] == "failed" and "broken.mp4" in log.loc["broken", "error"]
    assert log.loc["cut", "status"] == "failed"

    df = load_dataset(out)
    assert len(df) == 8  # 4 good videos x 2 faces
    assert sorted(df["video"].unique()) == ["f2", "r1", "r1_x", "r3"]  # for video-level scores
    assert (df.groupby("group")["split"].nunique() == 1).all()
    by_video = df.assign(video=[Path(p).name.split("F")[0][:-2] for p in df["path"]])
    assert set(by_video.loc[by_video["label"] == 1, "video"]) == {"r1", "r3"}
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    assert list(manifest.columns) == ["path", "split", "label", "source", "group", "video",
                                      "width", "height", "sha256"]
    videos = dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["video"],
                      strict=True))
    assert videos["r1_x10F.jpg"] == "r1_x" and videos["r110F.jpg"] == "r1"
    assert set(manifest["label"]) == {"Real", "Fake"}
    groups = dict(zip(manifest["path"].map(lambda p: Path(p).name), manifest["group"],
                      strict=True))
    assert groups["r1_x10F.jpg"] == groups["r1_x20F.jpg"] == groups["r110F.jpg"] == "r1"
    assert "r110F.jpg" in groups and "r10F.jpg" not in groups  # the study's names


def test_rerun_and_resume(tmp_path, videos, fake_detector, capsys) -> None:
    d, labels = videos
    out = tmp_path / "ds"
    assert run_all(d, labels, out) == 0
    first = (out / "manifest.csv").read_text()
    fake_detector.clear()
    assert run_all(d, labels, out) == 0  # finished: nothing to do
    assert fake_detector == [] and "already finished" in capsys.readouterr().err

    # an interrupted run: marker says running, r3 never made it into the log
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "status": "running"}))
    log = pd.read_csv(out / "faces" / "face_log.csv", dtype=str)
    log[log["video"] != "r3"].to_csv(out / "faces" / "face_log.csv", index=False)
    assert run_all(d, labels, out) == 0
    assert len(fake_detector) == 3  # only r3's three frames were detected again
    assert (out / "manifest.csv").read_text() == first
    assert json.loads((out / MARKER).read_text())["status"] == "finished"


def test_never_overwrites_without_flag(tmp_path, videos, fake_detector, capsys) -> None:
    d, labels = videos
    out = tmp_path / "ds"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    assert run_all(d, labels, out) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert run_all(d, labels, out, "--overwrite") == 0
    assert (out / "precious.txt").read_text() == "keep me"  # only our outputs are replaced
    # a finished run with other settings is refused too
    assert run_all(d, labels, out, "--margin", "0.2") == 2
    # an unfinished run with other settings: refused, naming what differs
    marker = json.loads((out / MARKER).read_text())
    (out / MARKER).write_text(json.dumps({**marker, "status": "running"}))
    assert run_all(d, labels, out, "--margin", "0.2") == 2
    assert "margin" in capsys.readouterr().err


def test_empty_folder_is_an_error(tmp_path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    labels = write_labels(tmp_path / "labels.csv", [("a.mp4", "Real", "s")])
    assert run_all(empty, labels, tmp_path / "out") == 2
    err = capsys.readouterr().err
    assert "a.mp4" in err and "nothing usable" in err


def test_videos_without_faces_produce_nothing(tmp_path, capsys) -> None:
    d = tmp_path / "v"
    d.mkdir()
    make_video(d / "flat.mp4", n_frames=20)  # real dlib HOG: no face in flat gray frames
    labels = write_labels(tmp_path / "labels.csv", [("flat.mp4", "Real", "s")])
    out = tmp_path / "out"
    assert run_all(d, labels, out) == 2
    assert "flat" in capsys.readouterr().err
    log = pd.read_csv(out / "faces" / "face_log.csv")
    assert log.loc[0, "dropped_no_face"] == 2 and log.loc[0, "faces_saved"] == 0


@pytest.mark.parametrize("extra,message", [
    (["--ratios", "0.5,0.6,0"], "ratios"),
    (["--ratios", "0.5,0.5"], "ratios"),
    (["--every", "0"], "--every"),
    (["--detector", "haar"], "detector"),
    (["--margin", "-1"], "margin"),
    (["--frames-per-video", "4"], "--frames-per-video: not allowed with argument --every"),
])
def test_bad_arguments(tmp_path, videos, capsys, extra: list[str], message: str) -> None:
    d, labels = videos
    assert run_all(d, labels, tmp_path / "o", *extra) == 2
    err = capsys.readouterr().err
    assert "error: " in err and message in err, err


def test_bad_labels_csv(tmp_path, videos, capsys) -> None:
    d, _ = videos
    bad = tmp_path / "bad.csv"
    bad.write_text("file,class\nr1.mp4,Real\n")
    assert run_all(d, bad, tmp_path / "o") == 2
    assert "missing column" in capsys.readouterr().err
    assert run_all(d, tmp_path / "absent.csv", tmp_path / "o") == 2
    assert main(["all", "--videos", str(d)]) == 2  # required arguments missing


def test_frames_then_faces(tmp_path, videos, fake_detector) -> None:
    d, labels = videos
    frames_out = tmp_path / "frames"
    assert main(["frames", "--videos", str(d), "--labels", str(labels), "--out",
                 str(frames_out), "--every", "10", "--workers", "1"]) == 0
    table = pd.read_csv(frames_out / "frames.csv", dtype={"video": str})
    assert (table.groupby("video").size()[["r1", "r1_x", "f2", "r3"]] == 3).all()
    assert all((frames_out / p).is_file() for p in table["path"])
    faces_out = tmp_path / "faces"
    assert main(["faces", "--frames", str(frames_out), "--out", str(faces_out),
                 "--workers", "1"]) == 0
    faces = pd.read_csv(faces_out / "faces.csv", dtype={"video": str})
    assert (faces.groupby("video").size()[["r1", "r1_x", "f2", "r3"]] == 2).all()
    assert set(faces.loc[faces["video"] == "r1", "label"]) == {"Real"}  # carried through
    # --keep-all-faces keeps both faces of bright frames
    out2 = tmp_path / "faces2"
    assert main(["faces", "--videos", str(d), "--labels", str(labels), "--out", str(out2),
                 "--every", "5", "--workers", "1", "--keep-all-faces", "--save-frames"]) == 0
    log = pd.read_csv(out2 / "face_log.csv", dtype={"video": str}).set_index("video")
    assert log.loc["r1", "faces_saved"] == 6  # frames 5..20 one face each, frame 25 two
    assert (out2 / "frames.csv").is_file()


def test_frames_per_video(tmp_path, videos, fake_detector) -> None:
    """--frames-per-video 4 on 30-frame videos: frames 0, 10, 19, 29 (uniform), counted in
    the face log; from the config file too, where a typed --every wins over it."""
    d, labels = videos
    out = tmp_path / "faces"
    base = ["faces", "--videos", str(d), "--labels", str(labels), "--workers", "1"]
    assert main([*base, "--out", str(out), "--frames-per-video", "4"]) == 0
    log = pd.read_csv(out / "face_log.csv", dtype={"video": str}).set_index("video")
    assert log.loc["r1", ["frames_read", "frames_kept"]].tolist() == [30, 4]
    # frame 0 is dark (no face), 29 is bright (two faces: dropped), 10 and 19 give one each
    assert log.loc["r1", ["faces_saved", "dropped_no_face", "dropped_multi_face"]].tolist() == [
        2, 1, 1]
    faces = pd.read_csv(out / "faces.csv", dtype={"video": str})
    assert sorted(faces.loc[faces["video"] == "r1", "frame_index"]) == [10, 19]
    cfg = tmp_path / "c.toml"
    cfg.write_text("[prepare]\nframes_per_video = 4\nevery = 10\n")
    out2 = tmp_path / "faces2"
    assert main([*base, "--out", str(out2), "--config", str(cfg)]) == 0
    log = pd.read_csv(out2 / "face_log.csv", dtype={"video": str}).set_index("video")
    assert log.loc["r1", "frames_kept"] == 4
    out3 = tmp_path / "faces3"
    assert main([*base, "--out", str(out3), "--config", str(cfg), "--every", "10"]) == 0
    log = pd.read_csv(out3 / "face_log.csv", dtype={"video": str}).set_index("video")
    assert log.loc["r1", "frames_kept"] == 3  # 0, 10, 20


def _flat_images(tmp_path: Path) -> tuple[Path, Path]:
    d = tmp_path / "imgs"
    d.mkdir()
    rows = []
    for i in range(24):
        name = f"img{i:02d}.jpg"
        make_image(d / name, seed=i)
        rows.append((name, "Real" if i % 2 else "Fake", "src", f"g{i // 4}"))
    (d / "corrupt.jpg").write_bytes(b"\xff\xd8 broken")
    rows.append(("corrupt.jpg", "Real", "src", "gx"))
    make_image(d / "nolabel.jpg", seed=99)
    (d / "readme.txt").write_text("hi")
    labels = tmp_path / "labels.csv"
    pd.DataFrame(rows, columns=["path", "label", "source", "group"]).to_csv(labels, index=False)
    return d, labels


def test_split_images_and_stats(tmp_path, capsys) -> None:
    d, labels = _flat_images(tmp_path)
    out = tmp_path / "ds"
    assert main(["split", "--images", str(d), "--labels", str(labels), "--out", str(out),
                 "--ratios", "0.5,0.25,0.25", "--workers", "1"]) == 0
    err = capsys.readouterr().err
    assert "corrupt.jpg" in err and "nolabel.jpg" in err and "readme.txt" in err
    df = load_dataset(out)
    assert len(df) == 24
    assert (df.groupby("group")["split"].nunique() == 1).all()
    assert set(df["split"]) == {"train", "validation", "test"}
    capsys.readouterr()
    assert main(["stats", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "pct_of_split" in printed and "no cross-split duplicates" in printed


def test_stats_finds_a_leak(tmp_path, capsys) -> None:
    ds = tmp_path / "ds"
    for split in ("train", "test"):
        (ds / split / "Real").mkdir(parents=True)
        make_image(ds / split / "Real" / "same.jpg", seed=1)
    make_image(ds / "train" / "Real" / "other.jpg", seed=2)
    assert main(["stats", str(ds)]) == 0
    out = capsys.readouterr().out
    assert "identical files across splits (sha256): 1" in out


def test_stats_on_nothing(tmp_path, capsys) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["stats", str(tmp_path / "empty")]) == 2
    assert str(tmp_path / "empty") in capsys.readouterr().err
    assert main(["stats", str(tmp_path / "absent")]) == 2
    assert str(tmp_path / "absent") in capsys.readouterr().err


def test_a_video_past_the_readers_bounds_is_a_failed_row_not_a_crash(tmp_path, monkeypatch):
    """The planned reader raises LimitExceeded (a packet index past its bounds): process()
    must log that video as failed and go on, as it does for an unreadable one (review)."""
    from ensemble_dfd.config import PrepareConfig
    from ensemble_dfd.inference.limits import LimitExceeded
    from ensemble_dfd.prepare import extract
    from ensemble_dfd.prepare.plan import VideoTask

    def refuse(path, s, report):
        raise LimitExceeded(f"{path}: needed more than 40 packets for a plan")

    monkeypatch.setattr(extract, "video_frames", refuse)
    task = VideoTask("odd", 1, "src", "odd", path=str(tmp_path / "odd.mp4"))
    result = extract.process(task, str(tmp_path / "out"),
                             extract.settings_from(PrepareConfig(), save_frames=False))
    assert result["log"]["status"] == "failed"
    assert "needed more than 40 packets" in result["log"]["error"]
