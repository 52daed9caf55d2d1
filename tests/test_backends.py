"""The whole path (train, collect, predict) under the JAX and torch Keras backends.

Each backend runs in its own process (KERAS_BACKEND is read once, at import). CI installs
the `jax` extra and the CPU build of torch (see .ci/run); without one, its case skips.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from conftest import TINY_TRAIN

SRC = Path(__file__).parents[1] / "src"


def _run(backend: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "",
           "ENSEMBLE_DFD_COMPILE_CACHE": os.environ.get("ENSEMBLE_DFD_COMPILE_CACHE", ""),
           "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    if not env["ENSEMBLE_DFD_COMPILE_CACHE"]:
        env.pop("ENSEMBLE_DFD_COMPILE_CACHE")
    return subprocess.run([sys.executable, "-m", *args], env=env, capture_output=True,
                          text=True, timeout=1200)


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_train_collect_predict(backend, synthetic_dataset, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed (pip install -e '.[{backend}]')")
    run = tmp_path / "run"
    proc = _run(backend, "ensemble_dfd.base_train", "--data", str(synthetic_dataset),
                "--out", str(run), "--models", "M6", *TINY_TRAIN)
    assert proc.returncode == 0, proc.stderr[-3000:]
    env = json.loads((run / "env.json").read_text())
    assert env["keras_backend"] == backend
    history = pd.read_csv(run / "models" / "M6" / "history.csv")
    assert history["phase"].tolist() == [1, 2] and history["loss"].notna().all()
    from ensemble_dfd.training.tracking import read_scalars  # TensorBoard files, no TF

    scalars = read_scalars(run / "tb" / "M6")
    assert scalars["train/epoch_loss"] == pytest.approx(dict(enumerate(history["loss"], 1)))
    assert set(scalars["validation/epoch_accuracy"]) == {1, 2}
    store = pd.read_parquet(run / "logits.parquet")
    assert set(store["split"]) == {"validation", "test"} and store["logit"].notna().all()
    image = next((synthetic_dataset / "test").rglob("*.jpg"))
    proc = _run(backend, "ensemble_dfd.predict", str(image), "--run", str(run),
                "--faces", "as-is")
    assert proc.returncode == 0, proc.stderr[-3000:]
    record = json.loads(proc.stdout.splitlines()[0])
    assert record["status"] == "ok" and 0.0 <= record["p_real"] <= 1.0
    assert set(record["models"]) == {"M6"}
