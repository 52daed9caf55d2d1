"""--tune end to end: a real keras-tuner search (two trials) through the command line, under
TensorFlow and under JAX, then the model trained with the best hyperparameters."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
from conftest import ROOT

from ensemble_dfd.training import backbones, tune

# the study's schedule (base frozen in phase 1, the tuned values in phase 2), minimal
TINY = ["--image-size", "32", "--weights", "none", "--epochs-frozen", "1",
        "--epochs-finetune", "1", "--batch-size", "16", "--set", "train.tuner=random",
        "--set", "train.tune_trials=2", "--set", "train.tune_epochs=1"]


def test_search_space_cuts_the_base_and_keeps_the_study_value():
    space = tune.search_space(backbones.get("M6"), 154)
    assert space["fine_tune_at"] == [0, 38, 77, 100, 115]
    assert space["lr_finetune"] == [1e-3, 1e-4, 1e-5] and space["dropout"] == [0.0, 0.2, 0.4]
    assert 100 not in tune.search_space(backbones.get("M2"), 22)["fine_tune_at"]


def test_missing_tensorboard_is_named_before_the_search(monkeypatch):
    monkeypatch.setattr(tune.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(tune.TunerDependencyError, match="needs tensorboard"):
        tune.check_tuner_dependencies("tensorflow")
    tune.check_tuner_dependencies("jax")  # keras-tuner imports it only under TensorFlow


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_tune_end_to_end(backend, synthetic_dataset, tmp_path):
    """Two random-search trials of VGG19 (the quickest to compile) at 32 px on 16 synthetic
    faces, through the command line in a fresh process with KERAS_BACKEND set, then the real
    training with the best values."""
    pytest.importorskip(backend)
    run = tmp_path / "run"
    cmd = [sys.executable, "-m", "ensemble_dfd.base_train", "--data", str(synthetic_dataset),
           "--out", str(run), "--models", "M2", "--limit", "8", "--tune", "--no-collect",
           *TINY]
    env = {**os.environ, "KERAS_BACKEND": backend,
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((run / "env.json").read_text())["keras_backend"] == backend

    bb = backbones.get("M2")
    tuning = run / "models" / "M2" / "tuning"
    trials = pd.read_csv(tuning / "trials.csv")
    assert len(trials) == 2 and (trials["status"] == "COMPLETED").all(), trials
    assert trials["score"].between(0, 1).all()
    space = tune.search_space(bb, bb.study.base_layers)  # fine_tune_at in [0, 5, 11, 16]
    for key, choices in space.items():
        assert trials[key].isin(choices).all(), key
    best = json.loads((tuning / "best_hparams.json").read_text())
    top = trials.loc[trials["score"] == trials["score"].max()]
    assert any(all(row[k] == pytest.approx(best[k]) for k in space) for _, row in top.iterrows())
    assert best["default_fine_tune_at"] == 100

    # the real training used the best values: recorded, and in the saved model itself
    done = json.loads((run / "models" / "M2" / "done.json").read_text())
    assert done["fine_tune_at"] == best["fine_tune_at"]
    assert done["lr_finetune"] == pytest.approx(best["lr_finetune"])
    assert done["dropout"] == pytest.approx(best["dropout"])
    history = pd.read_csv(run / "models" / "M2" / "history.csv")
    assert history["phase"].tolist() == [1, 2]
    assert history["lr"].iloc[1] == pytest.approx(best["lr_finetune"])
    from ensemble_dfd.training.train import load_model

    model = load_model(run / "models" / "M2" / "model.keras")
    assert model.get_layer("dropout").rate == pytest.approx(best["dropout"])
    layers = backbones.find_base(model).layers
    at = best["fine_tune_at"]
    assert all(not la.trainable for la in layers[:at] if la.weights)
    assert all(la.trainable for la in layers[at:] if la.weights)
