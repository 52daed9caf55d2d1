"""`prepare` on the shared research data (skipped where ../shared/data is absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from ensemble_dfd.data.dataset import load_dataset
from ensemble_dfd.prepare import main

pytestmark = pytest.mark.integration


def test_all_on_wild_videos(wild: Path, tmp_path: Path) -> None:
    out = tmp_path / "wild"
    labels = pd.read_csv(wild / "labels.csv", dtype=str)
    # --every 120 (the study's step) gives 3-7 frames per video: about 30 s on 2 cores
    assert main(["all", "--videos", str(wild), "--labels", str(wild / "labels.csv"),
                 "--out", str(out), "--every", "120"]) == 0
    log = pd.read_csv(out / "faces" / "face_log.csv", dtype=str).set_index("video")
    stems = [Path(p).stem for p in labels["path"]]
    assert sorted(log.index) == sorted(stems)
    assert (log["faces_saved"].astype(int) > 0).all(), log["faces_saved"].to_dict()
    assert (log["status"] == "done").all()
    assert dict(zip(stems, labels["label"], strict=True)) == log["label"].to_dict()

    df = load_dataset(out)
    assert len(df) == log["faces_saved"].astype(int).sum()
    assert (df.groupby("group")["split"].nunique() == 1).all()
    manifest = pd.read_csv(out / "manifest.csv", dtype=str)
    video_of = manifest["path"].map(lambda p: next(s for s in sorted(stems, key=len,
                                                                     reverse=True)
                                                   if Path(p).name.startswith(s)))
    expected = dict(zip(stems, labels["label"], strict=True))
    assert (manifest["label"] == video_of.map(expected)).all()  # labels carried through
    # the FaceForensics++ fake 519_515 is made from real video 519: same group, same split
    groups = dict(zip(video_of, manifest["group"], strict=True))
    assert groups["519_515"] == groups["519"] == "519"


def test_stats_on_dfd_mini(dfd_mini: Path, capsys) -> None:
    assert main(["stats", str(dfd_mini)]) == 0
    out = capsys.readouterr().out
    assert "4401 images" in out
    for word in ("train", "validation", "test", "dfdc", "mesonet", "pct_of_split"):
        assert word in out
    assert "identical files across splits (sha256): 0" in out
    assert "no cross-split duplicates" in out


def test_split_on_flattened_dfd_mini(dfd_mini: Path, tmp_path: Path) -> None:
    manifest = pd.read_csv(dfd_mini / "manifest.csv", dtype=str)
    flat = tmp_path / "flat"
    flat.mkdir()
    for rel in manifest["path"]:
        os.symlink(dfd_mini / rel, flat / Path(rel).name)
    labels = manifest.assign(path=manifest["path"].map(lambda p: Path(p).name))
    labels[["path", "label", "source", "group"]].to_csv(tmp_path / "labels.csv", index=False)
    out = tmp_path / "ds"
    assert main(["split", "--images", str(flat), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(out)]) == 0
    df = load_dataset(out)
    assert len(df) == len(manifest)
    assert (df.groupby("group")["split"].nunique() == 1).all()
    share = df["split"].value_counts(normalize=True)
    assert share["train"] == pytest.approx(0.80, abs=0.05)
    assert share["validation"] == pytest.approx(0.19, abs=0.05)
    assert 0 < share["test"] < 0.05
    again = tmp_path / "ds2"
    assert main(["split", "--images", str(flat), "--labels", str(tmp_path / "labels.csv"),
                 "--out", str(again)]) == 0
    assert (again / "manifest.csv").read_text() == (out / "manifest.csv").read_text()
