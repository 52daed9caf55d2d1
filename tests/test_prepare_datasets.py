"""`prepare ... --dataset NAME --root ROOT` and `prepare import-dfb`: official splits kept,
missing files listed (never fatal), a wrong ROOT one error line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synthetic_media import make_image

from ensemble_dfd.data import faces as facelib
from ensemble_dfd.datasets import Options, read_dataset
from ensemble_dfd.prepare import main

LAYOUTS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "layouts"


def read_manifest(out: Path) -> pd.DataFrame:
    return pd.read_csv(out / "manifest.csv", dtype=str, keep_default_na=False)


def test_wrong_root_is_one_error_line(tmp_path, capsys):
    (tmp_path / "root").mkdir()
    rc = main(["all", "--dataset", "ffpp", "--root", str(tmp_path / "root"),
               "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("error: ")
    assert "original_sequences/youtube/c23/videos/NNN.mp4" in err[0]
    rc = main(["all", "--dataset", "ffpp", "--out", str(tmp_path / "out")])
    assert rc == 2 and "needs --root" in capsys.readouterr().err


def dfb_tree(root: Path) -> tuple[Path, pd.DataFrame]:
    """Processed DeepfakeBench frames of FF++ c23 (two reals, one fake per split), its
    dataset JSON as rearrange.py writes it, and the same frames as a labels CSV."""
    index: dict = {"FaceForensics++": {"FF-real": {}, "FF-DF": {}}}
    rows = []
    seed = 0
    for split, (a, b) in (("train", ("000", "003")), ("val", ("001", "002")),
                          ("test", ("004", "005"))):
        for label, folder, video in (("FF-real", "original_sequences/youtube", a),
                                     ("FF-real", "original_sequences/youtube", b),
                                     ("FF-DF", "manipulated_sequences/Deepfakes", f"{a}_{b}")):
            frames = []
            for k in range(2):
                rel = f"FaceForensics++/{folder}/c23/frames/{video}/{k:03d}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                make_image(root / rel, size=(48, 48), seed=seed)
                seed += 1
                frames.append(rel)
                rows.append({"path": rel, "label": "Real" if label == "FF-real" else "Fake",
                             "source": "ffpp-c23-" + ("real" if label == "FF-real"
                                                      else "Deepfakes"),
                             "group": f"ffpp-{video.split('_')[0]}", "split": split})
            index["FaceForensics++"][label].setdefault(split, {}).setdefault("c23", {})[
                video] = {"label": label, "frames": frames}
    index["FaceForensics++"]["FF-DF"]["test"]["c23"]["004_005"]["frames"].append(
        "FaceForensics++/manipulated_sequences/Deepfakes/c23/frames/004_005/099.png")
    path = root / "FaceForensics++.json"
    path.write_text(json.dumps(index))
    return path, pd.DataFrame(rows)


def test_import_dfb_round_trip(tmp_path):
    root = tmp_path / "dfb"
    index, labels = dfb_tree(root)
    out = tmp_path / "imported"
    assert main(["import-dfb", str(index), "--root", str(root), "--out", str(out)]) == 0
    imported = read_manifest(out)
    report = json.loads((out / "report.json").read_text())
    assert report["missing"] == 1 and report["missing_files"][0]["path"].endswith("099.png")
    # its frames are DeepfakeBench's aligned crops: recorded so that runs crop the same way
    from ensemble_dfd.prepare.recipe import recorded_crop

    assert recorded_crop(out) == {"align": "dfb", "frame_rule": "floor", "detector": "hog",
                                  "upsample": 1, "detect_size": 0, "margin": 0.0,
                                  "max_width": 0}
    csv = tmp_path / "labels.csv"
    labels.to_csv(csv, index=False)
    direct = tmp_path / "direct"
    assert main(["split", "--images", str(root), "--labels", str(csv), "--out",
                 str(direct)]) == 0
    keys = ["split", "label", "source", "group", "sha256"]
    a = imported[keys].sort_values(keys).reset_index(drop=True)
    b = read_manifest(direct)[keys].sort_values(keys).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    assert len(a) == 18
    assert set(imported.loc[imported["source"] == "ffpp-c23-real", "label"]) == {"Real"}
    assert set(imported.loc[imported["method"] == "Deepfakes", "label"]) == {"Fake"}
    # the fake 000_003 and its reals share no group with another split
    assert imported.groupby("group")["split"].nunique().max() == 1


def test_dfb_reader_flips_labels_and_settles_repeated_videos(tmp_path):
    frame = tmp_path / "Celeb-DF-v2/Celeb-real/frames/id0_0000/000.png"
    frame.parent.mkdir(parents=True)
    make_image(frame)
    entry = {"label": "CelebDFv2_real", "frames": [str(frame)]}  # absolute, as DFB writes
    index = tmp_path / "Celeb-DF-v2.json"
    index.write_text(json.dumps({"Celeb-DF-v2": {"CelebDFv2_real": {
        "train": {}, "val": {"id0_0000": entry}, "test": {"id0_0000": entry}}}}))
    idx = read_dataset("dfb", tmp_path / "moved", Options(index=str(index)))
    assert [(r.label, r.split, r.dataset, r.video) for r in idx.rows] == [
        (1, "test", "celebdf", "celebdf-real-id0_0000")]
    assert any("moved from validation to test" in n for n in idx.notes)


def test_wilddeepfake_through_prepare_all_without_detection(tmp_path, monkeypatch):
    def no_detection(*a, **k):
        raise AssertionError("WildDeepfake images are faces already")

    monkeypatch.setattr(facelib, "face_locations", no_detection)
    root = tmp_path / "wdf"
    seed = 0
    for folder in ("real_train", "fake_train", "real_test", "fake_test"):
        for seq in range(4 if "train" in folder else 1):
            d = root / folder / f"{seq}"
            d.mkdir(parents=True)
            for k in range(3):
                make_image(d / f"{k}.png", size=(40, 40), seed=seed)
                seed += 1
    out = tmp_path / "out"
    assert main(["all", "--dataset", "wilddeepfake", "--root", str(root), "--out", str(out),
                 "--frames-per-video", "2", "--ratios", "0.5,0.5,0"]) == 0
    m = read_manifest(out)
    assert len(m) == 2 * (8 + 2)
    assert set(m.loc[m["video"].str.contains("_test_"), "split"]) == {"test"}
    assert set(m.loc[m["video"].str.contains("_train_"), "split"]) == {"train", "validation"}
    assert m.groupby("group")["split"].nunique().max() == 1


def fake_faces(monkeypatch):
    """Every frame holds one face (the shared videos' real faces are found by dlib in
    the integration tests; here only the flow of rows matters)."""
    monkeypatch.setattr(facelib, "face_locations",
                        lambda rgb, upsample=1, model="hog": [
                            facelib.trim_css_to_bounds((10, 70, 70, 10), rgb.shape)])


@pytest.mark.integration
def test_ffpp_layout_official_splits(tmp_path):
    root = LAYOUTS / "ffpp"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    out = tmp_path / "ff"
    assert main(["all", "--dataset", "ffpp", "--root", str(root), "--compression", "c23",
                 "--out", str(out), "--frames-per-video", "2", "--workers", "2"]) == 0
    m = read_manifest(out)
    split = m.groupby("video")["split"].first().to_dict()
    assert split == {"519": "train", "519_515-Deepfakes": "train",
                     "750_743-Face2Face": "train", "004": "validation",
                     "004_982-NeuralTextures": "validation", "634": "test",
                     "634_660-FaceSwap": "test"}
    fakes = m[m["label"] == "Fake"]
    assert all(s == f"ffpp-c23-{meth}" for s, meth in zip(fakes["source"], fakes["method"],
                                                         strict=True))
    assert m.groupby("group")["split"].nunique().max() == 1
    report = json.loads((out / "report.json").read_text())
    assert report["groups_across_splits"] == []
    first = report["missing_files"][0]
    assert first["path"].endswith("original_sequences/youtube/c23/videos/750.mp4")
    assert "750.mp4" in (out / "missing.csv").read_text()


@pytest.mark.integration
def test_dfdc_layout_three_read_three_missing(tmp_path, monkeypatch):
    root = LAYOUTS / "dfdc"
    if not root.is_dir():
        pytest.skip(f"{root} is absent")
    fake_faces(monkeypatch)
    out = tmp_path / "dfdc"
    assert main(["faces", "--dataset", "dfdc", "--root", str(root), "--out", str(out),
                 "--frames-per-video", "1", "--workers", "1"]) == 0
    index = pd.read_csv(out / "index.csv", dtype=str)
    assert sorted(index["video"]) == ["brtujopkby", "widuwuoiur", "yhffcuhhjy"]
    meta = {}
    for f in root.glob("*/metadata.json"):
        meta.update(json.loads(f.read_text()))
    for rec in index.to_dict("records"):
        assert rec["group"] == Path(meta[rec["video"] + ".mp4"]["original"]).stem
    report = json.loads((out / "report.json").read_text())
    assert report["missing"] == 3
    assert sorted(Path(m["path"]).name for m in report["missing_files"]) == [
        "awnfpubqmo.mp4", "vtfpbtmgfh.mp4", "zvqinhzeah.mp4"]
    faces = pd.read_csv(out / "faces.csv", dtype=str)
    assert set(faces["video"]) == set(index["video"])
    split = tmp_path / "split"
    assert main(["split", "--faces", str(out), "--out", str(split)]) == 0
    m = read_manifest(split)
    assert set(m["split"]) == {"train"} and set(m["method"]) == {"fake"}
    assert np.all(m["group"] != m["video"])


def test_frames_then_faces_then_split_keep_the_official_splits(tmp_path, monkeypatch):
    """`frames --dataset` writes the reader's index beside frames.csv; `faces --frames`
    carries it on and `split --faces` keeps the official FF++ splits (not a random draw)."""
    from test_datasets import ffpp_layout

    fake_faces(monkeypatch)
    root = ffpp_layout(tmp_path / "ff")
    frames, faces, data = tmp_path / "frames", tmp_path / "faces", tmp_path / "data"
    assert main(["frames", "--dataset", "ffpp", "--root", str(root), "--out", str(frames),
                 "--frames-per-video", "1", "--workers", "1"]) == 0
    assert (frames / "index.csv").is_file()
    assert main(["faces", "--frames", str(frames), "--out", str(faces), "--workers", "1"]) == 0
    assert main(["split", "--faces", str(faces), "--out", str(data),
                 "--ratios", "0,0,1"]) == 0  # ratios would put everything in test
    m = read_manifest(data)
    assert m.groupby("video")["split"].first().to_dict() == {
        "004": "validation", "004_982-NeuralTextures": "validation", "515": "train",
        "515_519-Deepfakes": "train", "519": "train", "519_515-Deepfakes": "train",
        "634": "test", "634_660-FaceSwap": "test", "750_743-Face2Face": "train"}
    assert set(m.loc[m["video"] == "634_660-FaceSwap", "source"]) == {"ffpp-c23-FaceSwap"}
    report = json.loads((frames / "report.json").read_text())
    assert report["missing"] > 0 and "750.mp4" in (frames / "missing.csv").read_text()


def test_dfb_scores_on_imported_frames_take_our_paths(tmp_path):
    """DeepfakeBench scores of the frames an import-dfb dataset holds (paths as its test
    output prints them, under another machine's rgb_dir) take that dataset's paths and
    splits, the keys our own models' logits on it carry."""
    from ensemble_dfd.data.dataset import load_dataset
    from ensemble_dfd.datasets.dfb_scores import DfbScoresError
    from ensemble_dfd.stacking.logits_table import load_table

    root = tmp_path / "dfb"
    index, labels = dfb_tree(root)
    data = tmp_path / "imported"
    assert main(["import-dfb", str(index), "--root", str(root), "--out", str(data)]) == 0
    scores = pd.DataFrame({"img_names": "/mnt/rgb/" + labels["path"],
                           "prob": np.where(labels["label"] == "Fake", 0.8, 0.3),
                           "label": (labels["label"] == "Fake").astype(int)})
    csv = tmp_path / "clip.csv"
    scores.to_csv(csv, index=False)
    table = load_table([csv], formats=["dfb"], dfb_data=data)
    ours = load_dataset(data)
    merged = table.images.merge(ours[["path", "split", "label"]], on="path",
                                suffixes=("", "_ours"))
    assert len(merged) == len(ours) == 18
    assert (merged["label"] == merged["label_ours"]).all()
    assert (merged["split"] == merged["split_ours"]).all()
    assert set(table.logits["model"]) == {"clip"}
    scores.loc[0, "img_names"] = "/mnt/rgb/FaceForensics++/elsewhere/0.png"
    scores.to_csv(csv, index=False)
    with pytest.raises(DfbScoresError, match="1 scored frame"):
        load_table([csv], formats=["dfb"], dfb_data=data)
