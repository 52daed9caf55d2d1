"""experiments/ffpp_cross.toml end to end on ../shared/data/layouts: train on FF++ c23 read
from its download layout, evaluate on Celeb-DF (a tiny layout the test builds from the
shared FF++ videos, as Celeb-DF ships it), DFDC (the shared parts) and DFD (absent:
skipped with a line). Tiny models, 2 frames per video; a few minutes on 2 CPU cores."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from ensemble_dfd import pipeline

ROOT = Path(__file__).resolve().parents[2]


def _splits(src: Path, out: Path) -> Path:
    """The official split files with two pairs in val and one in test: the shared layout
    has four pairs on disk and one in val, too few groups for the meta-learners' grouped
    cross-validation (official membership is otherwise kept)."""
    out.mkdir()
    tr, va, te = (json.loads((src / f"{n}.json").read_text()) for n in ("train", "val", "test"))
    move_val = [p for p in te if "634" in p]
    move_test = [p for p in tr if "750" in p]
    for name, pairs in (("train", [p for p in tr if p not in move_test]),
                        ("val", va + move_val),
                        ("test", [p for p in te if p not in move_val] + move_test)):
        (out / f"{name}.json").write_text(json.dumps(pairs))
    return out


def _celebdf(ffpp: Path, out: Path) -> Path:
    """A Celeb-DF v2 layout whose two test videos are links to shared FF++ videos."""
    videos = ffpp / "original_sequences/youtube/c23/videos"
    (out / "Celeb-real").mkdir(parents=True)
    (out / "Celeb-synthesis").mkdir()
    (out / "Celeb-real/id0_0000.mp4").symlink_to(videos / "634.mp4")
    (out / "Celeb-synthesis/id0_id1_0000.mp4").symlink_to(
        ffpp / "manipulated_sequences/FaceSwap/c23/videos/634_660.mp4")
    (out / "List_of_testing_videos.txt").write_text(
        "1 Celeb-real/id0_0000.mp4\n0 Celeb-synthesis/id0_id1_0000.mp4\n")
    return out


@pytest.mark.integration
@pytest.mark.slow
def test_ffpp_cross_experiment_on_the_layouts(tmp_path, monkeypatch):
    layouts = ROOT.parent / "shared" / "data" / "layouts"
    if not (layouts / "ffpp").is_dir():
        pytest.skip(f"{layouts} is absent")
    monkeypatch.chdir(ROOT)  # the experiment's paths are relative to the repository root
    ffpp = layouts / "ffpp"
    run = tmp_path / "run"
    rc = pipeline.main([
        "--config", "experiments/ffpp_cross.toml", "--out", str(run),
        "--set", f"pipeline.splits={_splits(ffpp / 'splits', tmp_path / 'splits')}",
        "--set", f"evaluate.celebdf.root={_celebdf(ffpp, tmp_path / 'celebdf')}",
        "--set", "prepare.frames_per_video=2",
        "--set", "train.process_per_model=false",
        "--set", 'stack.learners=["soft_vote","weighted_vote"]'])
    assert rc == 0
    log = (run / "pipeline.log").read_text()
    assert "evaluate.dfd skipped (optional, not readable: ../shared/data/layouts/dfd" in log
    manifest = pd.read_csv(run / "dataset" / "manifest.csv", dtype=str)
    assert set(manifest.groupby("video")["split"].first().items()) == {
        ("519", "train"), ("519_515-Deepfakes", "train"), ("004", "validation"),
        ("004_982-NeuralTextures", "validation"), ("634", "validation"),
        ("634_660-FaceSwap", "validation"), ("750_743-Face2Face", "test")}
    cross = pd.read_csv(run / "stack" / "cross_dataset.csv", keep_default_na=False)
    assert set(cross["eval_set"]) == {"test", "celebdf", "dfdc"}
    assert set(cross["train_set"]) == {"ffpp"}
    assert {"soft_vote", "weighted_vote"} < set(cross["predictor"])
    images = pd.read_parquet(run / "images.parquet")
    sources = images.groupby("split")["source"].agg(set).to_dict()
    assert sources["celebdf"] == {"celebdf-Celeb-real", "celebdf-Celeb-synthesis"}
    assert sources["dfdc"] == {"dfdc-fake"} and sources["test"] == {"ffpp-c23-Face2Face"}
    assert (run / "report" / "index.html").is_file()
