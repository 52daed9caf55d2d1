"""Readers of the public layouts, each on a tiny layout built as the dataset ships it."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest
from synthetic_media import make_image, make_video

from ensemble_dfd.datasets import READERS, LayoutError, Options, read_dataset
from ensemble_dfd.datasets.dfdc import parse_part_splits


def vid(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return make_video(path, n_frames=3, size=(32, 24))


def by_video(index):
    return {r.video: r for r in index.rows}


def ffpp_layout(root: Path) -> Path:
    (root / "splits").mkdir(parents=True)
    for name, pairs in (("train", [["519", "515"], ["750", "743"]]), ("val", [["004", "982"]]),
                        ("test", [["634", "660"]])):
        (root / "splits" / f"{name}.json").write_text(json.dumps(pairs))
    for v in ("519", "515", "004", "634"):
        vid(root / f"original_sequences/youtube/c23/videos/{v}.mp4")
    for m, v in (("Deepfakes", "519_515"), ("Face2Face", "750_743"),
                 ("NeuralTextures", "004_982"), ("FaceSwap", "634_660"),
                 ("Deepfakes", "515_519")):
        vid(root / f"manipulated_sequences/{m}/c23/videos/{v}.mp4")
    return root


def test_ffpp_official_pairs_methods_and_missing(tmp_path):
    idx = read_dataset("ffpp", ffpp_layout(tmp_path / "ff"), Options(compression="c23"))
    rows = by_video(idx)
    assert {v: r.split for v, r in rows.items()} == {
        "519": "train", "515": "train", "519_515-Deepfakes": "train",
        "515_519-Deepfakes": "train", "750_743-Face2Face": "train", "004": "validation",
        "004_982-NeuralTextures": "validation", "634": "test", "634_660-FaceSwap": "test"}
    assert rows["634_660-FaceSwap"].source == "ffpp-c23-FaceSwap"
    assert rows["519"].group == rows["515_519-Deepfakes"].group == "519_515"
    assert {r.label for r in idx.rows if r.method == "youtube"} == {1}
    missing = {Path(m.path).name: m.reason for m in idx.missing}
    assert "original of Face2Face fake 750_743" in missing["750.mp4"]
    assert idx.missing[0].path.endswith("750.mp4")  # originals of present fakes first
    assert "743.mp4" in missing and "660_634.mp4" in missing


def test_ffpp_methods_filter_splits_dir_and_bad_split_file(tmp_path):
    root = ffpp_layout(tmp_path / "ff")
    moved = tmp_path / "splits"
    (root / "splits").rename(moved)
    with pytest.raises(LayoutError, match="split files missing"):
        read_dataset("ffpp", root)
    idx = read_dataset("ffpp", root, Options(methods=("FaceSwap",), splits_dir=str(moved)))
    assert {r.method for r in idx.rows} == {"youtube", "FaceSwap"}
    (moved / "val.json").write_text("{not json")
    with pytest.raises(LayoutError, match="val.json"):
        read_dataset("ffpp", root, Options(splits_dir=str(moved)))
    with pytest.raises(LayoutError, match="unknown FaceForensics"):
        read_dataset("ffpp", root, Options(methods=("DeepFaceLab",), splits_dir=str(moved)))


@pytest.mark.parametrize("name", sorted(set(READERS) - {"dfb"}))
def test_wrong_root_is_one_error_naming_the_expected_files(tmp_path, name):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "random.mp4").write_bytes(b"")
    with pytest.raises(LayoutError, match="expected") as err:
        read_dataset(name, tmp_path / "x")
    assert "\n" not in str(err.value)
    with pytest.raises(LayoutError, match="no such folder"):
        read_dataset(name, tmp_path / "absent")


def test_dfdc_parts_groups_missing_and_test_labels(tmp_path):
    root = tmp_path / "dfdc"
    part = root / "dfdc_train_part_0"
    vid(part / "aaa.mp4")
    vid(part / "bbb.mp4")
    (part / "metadata.json").write_text(json.dumps({
        "aaa.mp4": {"label": "REAL", "split": "train"},
        "bbb.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"},
        "ccc.mp4": {"label": "FAKE", "split": "train", "original": "aaa.mp4"}}))
    part45 = root / "dfdc_train_part_45"
    vid(part45 / "ddd.mp4")
    (part45 / "metadata.json").write_text(json.dumps({
        "ddd.mp4": {"label": "FAKE", "split": "train", "original": "zzz.mp4"}}))
    test = root / "test"
    vid(test / "t1.mp4")
    (test / "labels.csv").write_text("filename,label\nt1.mp4,1\nt2.mp4,0\n")
    idx = read_dataset("dfdc", root)
    rows = by_video(idx)
    assert rows["aaa"].group == rows["bbb"].group == "aaa"
    assert (rows["aaa"].label, rows["bbb"].label, rows["t1"].label) == (1, 0, 0)
    assert (rows["aaa"].split, rows["ddd"].split, rows["t1"].split) == ("train", "test", "test")
    assert sorted(Path(m.path).name for m in idx.missing) == ["ccc.mp4", "t2.mp4"]
    grouped = read_dataset("dfdc", root, Options(part_splits="group"))
    assert by_video(grouped)["aaa"].split == "" and by_video(grouped)["t1"].split == "test"
    assert parse_part_splits("train=0-1,test=2") == {0: "train", 1: "train", 2: "test"}
    with pytest.raises(LayoutError, match="SPLIT=A-B"):
        parse_part_splits("holdout=3")


def test_dfd_everything_test_grouped_by_actor(tmp_path):
    root = tmp_path / "dfd"
    vid(root / "original_sequences/actors/c23/videos/01__exit_phone_room.mp4")
    vid(root / "manipulated_sequences/DeepFakeDetection/c23/videos/"
            "01_02__exit_phone_room__YVGY8LOK.mp4")
    vid(root / "manipulated_sequences/DeepFakeDetection/c23/videos/03_04__walk__ABCDEFGH.mp4")
    idx = read_dataset("dfd", root)
    assert {r.split for r in idx.rows} == {"test"}
    assert {r.video: r.group for r in idx.rows} == {
        "01__exit_phone_room": "actor01", "01_02__exit_phone_room__YVGY8LOK": "actor01",
        "03_04__walk__ABCDEFGH": "actor03"}
    assert [Path(m.path).name for m in idx.missing] == ["03__walk.mp4"]
    assert by_video(idx)["03_04__walk__ABCDEFGH"].source == "dfd-c23-DeepFakeDetection"
    assert {r.split for r in read_dataset("dfd", root, Options(part_splits="group")).rows} \
        == {""}


def test_celebdf_test_list_identity_groups_and_plusplus(tmp_path):
    root = tmp_path / "cdf"
    for rel in ("Celeb-real/id0_0000.mp4", "Celeb-real/id1_0001.mp4", "YouTube-real/00000.mp4",
                "Celeb-synthesis/id0_id1_0000.mp4", "Celeb-synthesis/id1_id0_0001.mp4",
                "Celeb-synthesis/FaceSwap/BlendFace/id0_id1_0000.mp4"):
        vid(root / rel)
    (root / "List_of_testing_videos.txt").write_text(
        "1 YouTube-real/00000.mp4\n0 Celeb-synthesis/id1_id0_0001.mp4\n"
        "1 Celeb-real/id9_0000.mp4\n")
    idx = read_dataset("celebdf", root)
    rows = by_video(idx)
    assert rows["00000"].split == "test" and rows["00000"].group == "yt-00000"
    assert rows["id1_id0_0001"].split == "test" and rows["id1_id0_0001"].label == 0
    assert rows["id0_0000"].split == "" and rows["id0_id1_0000"].group == "id0"
    assert idx.fill == ("train", "validation")
    assert rows["id0_id1_0000-BlendFace"].source == "celebdf-BlendFace"
    assert [Path(m.path).name for m in idx.missing] == ["id9_0000.mp4"]
    with pytest.raises(LayoutError, match="line 1"):
        (root / "List_of_testing_videos.txt").write_text("real Celeb-real/id0_0000.mp4\n")
        read_dataset("celebdf", root)


def test_dfdcp_dataset_json(tmp_path):
    root = tmp_path / "dfdcp"
    vid(root / "method_A/1255229/1255229_A/1255229_A_007.mp4")
    vid(root / "original_videos/1255229/1255229_001.mp4")
    (root / "dataset.json").write_text(json.dumps({
        "method_A/1255229/1255229_A/1255229_A_007.mp4": {"label": "fake", "set": "test"},
        "original_videos/1255229/1255229_001.mp4": {"label": "real", "set": "train"},
        "method_B/1/2/absent.mp4": {"label": "fake", "set": "train"}}))
    idx = read_dataset("dfdcp", root)
    assert sorted((r.method, r.label, r.split, r.group) for r in idx.rows) == [
        ("method_A", 0, "test", "1255229"), ("original_videos", 1, "", "1255229")]
    assert [Path(m.path).name for m in idx.missing] == ["absent.mp4"]


def test_wilddeepfake_folders_and_archives(tmp_path):
    root = tmp_path / "wdf"
    for i in range(3):
        make_image((root / "real_train" / "12").mkdir(parents=True, exist_ok=True)
                   or root / "real_train" / "12" / f"{i}.png", seed=i)
    seq = tmp_path / "seq" / "7" / "fake" / "0"
    seq.mkdir(parents=True)
    make_image(seq / "0.png")
    make_image(seq / "1.png", seed=1)
    (root / "fake_test").mkdir()
    with tarfile.open(root / "fake_test" / "7.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "seq" / "7", arcname="7")
    (root / "fake_test" / "8.tar.gz").write_bytes(b"broken")
    idx = read_dataset("wilddeepfake", root)
    rows = by_video(idx)
    assert len(rows["real_train_12"].frames) == 3 and rows["real_train_12"].split == ""
    assert rows["fake_test_7"].split == "test" and rows["fake_test_7"].label == 0
    assert [Path(m.path).name for m in idx.missing] == ["8.tar.gz"]


def test_config_knows_every_reader_a_config_may_name():
    from ensemble_dfd.config import DATASET_NAMES

    assert set(DATASET_NAMES) == set(READERS) - {"dfb"}


def test_dfb_index_that_is_no_deepfakebench_json_is_one_error(tmp_path):
    bad = tmp_path / "x.json"
    for text, match in (("[1, 2]", "not a DeepfakeBench dataset JSON"),
                        ("{oops", "not a readable JSON")):
        bad.write_text(text)
        with pytest.raises(LayoutError, match=match):
            read_dataset("dfb", tmp_path, Options(index=str(bad)))
    with pytest.raises(LayoutError, match="no such DeepfakeBench index"):
        read_dataset("dfb", tmp_path, Options(index=str(tmp_path / "absent.json")))
