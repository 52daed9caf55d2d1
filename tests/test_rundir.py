"""The run folder's owner: one stack.json parser, one best-single rule, atomic output."""

from __future__ import annotations

import numpy as np
import pytest

from ensemble_dfd.rundir import Run, RunError, StackInfo, choose_best_single
from ensemble_dfd.runio import RunExistsError, staged_dir
from ensemble_dfd.stacking.logits import write_store
from ensemble_dfd.stacking.synthetic_logits import make_store


def test_stack_json_has_one_parser(tmp_path):
    run = Run(tmp_path)
    assert run.stack is None and run.best_single() is None
    (tmp_path / "stack").mkdir()
    (tmp_path / "stack" / "stack.json").write_text('{"learners": ["a", "soft_vote"], '
                                                   '"best_single": "M3", '
                                                   '"thresholds": {"M3": 0.5}}')
    run = Run(tmp_path)
    assert run.stack.primary == "soft_vote" and run.best_single() == "M3"
    assert run.stack.threshold("M3") == 0.5 and run.stack.threshold("M9") == 0.0
    (tmp_path / "stack" / "stack.json").write_text("{not json")
    with pytest.raises(RunError, match="stack.json: not valid JSON"):
        _ = Run(tmp_path).stack


def test_best_single_without_a_stack_uses_the_same_rule(tmp_path):
    logits, images = make_store(n_models=3, sizes={"validation": 200, "test": 50},
                                strength=[0.2, 0.9, 0.5])
    write_store(tmp_path, logits, images)
    from ensemble_dfd.stacking.logits import logit_matrix, read_store

    store = read_store(tmp_path)
    val = logit_matrix(store, "validation")
    expect = choose_best_single(val.y, val.X, val.models, {m: 0.0 for m in val.models})
    assert Run(tmp_path).best_single(store) == expect == val.models[1]


def test_stack_info_primary_rule():
    assert StackInfo().primary is None
    assert StackInfo(learners=["b", "a"]).primary == "b"
    assert StackInfo(learners=["b", "soft_vote"]).primary == "soft_vote"
    assert StackInfo(learners=["b", "soft_vote"], recommended="b").primary == "b"
    with pytest.raises(RunError, match="x.json: unusable content"):
        StackInfo.parse({"thresholds": {"M1": "high"}}, "x.json")


def test_staged_dir_publishes_only_a_finished_folder(tmp_path):
    out = tmp_path / "stack"
    with pytest.raises(ZeroDivisionError), staged_dir(out, overwrite=False) as tmp:
        (tmp / "half.csv").write_text("x")
        raise ZeroDivisionError
    assert not out.exists() and list(tmp_path.iterdir()) == []
    with staged_dir(out, overwrite=False) as tmp:
        (tmp / "a.csv").write_text("1")
    assert (out / "a.csv").read_text() == "1"
    with pytest.raises(RunExistsError, match="--overwrite"), \
            staged_dir(out, overwrite=False) as tmp:
        (tmp / "a.csv").write_text("2")
    assert (out / "a.csv").read_text() == "1" and len(list(tmp_path.iterdir())) == 1
    with staged_dir(out, overwrite=True) as tmp:
        (tmp / "a.csv").write_text("2")
    assert (out / "a.csv").read_text() == "2"
    assert np.array_equal(sorted(p.name for p in tmp_path.iterdir()), ["stack"])


def test_images_table_video_column_falls_back_to_group(tmp_path):
    """A split collected from a manifest with a video column keeps it; splits from
    manifests without one get their group as their video (the contract's fallback)."""
    import pandas as pd

    logits, images = make_store(n_models=2, sizes={"validation": 20, "test": 10})
    write_store(tmp_path, logits, images)
    wild_logits = logits[logits["split"] == "test"].assign(split="wild")
    wild_images = images[images["split"] == "test"].assign(split="wild")
    wild_images = wild_images.assign(video=[f"v{i % 3}" for i in range(len(wild_images))])
    write_store(tmp_path, wild_logits, wild_images)
    table = pd.read_parquet(tmp_path / "images.parquet")
    wild, old = table[table["split"] == "wild"], table[table["split"] != "wild"]
    assert set(wild["video"]) == {"v0", "v1", "v2"}
    assert (old["video"] == old["group"]).all()
