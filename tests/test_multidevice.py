"""Data parallelism over two virtual CPU devices matches one device (TensorFlow and JAX).

Each backend runs in its own process: the device count is fixed when the backend starts.
One training step, nothing random and no per-replica statistics (``multidevice_run.py``):
from the same initial weights, the two devices' step is the one device's step up to float
round-off in the summed gradients, so the trained weights agree to 1e-5 (a step moves them
by 1e-3; seen: 5.6e-8 TensorFlow, 3.4e-7 JAX) and the step's loss to 1e-5. (Whole-epoch
losses with BatchNorm in training mode differ by design, and the old tolerances on them
were machine dependent: issue 26.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("multidevice_run.py")


def _run(backend: str, tmp_path: Path) -> tuple[dict, dict]:
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(RUNNER), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data parallel over 2 devices" in proc.stdout, proc.stdout[-2000:]

    def line(tag: str) -> dict:
        text = next(x for x in proc.stdout.splitlines() if x.startswith(tag + " "))
        return json.loads(text[len(tag) + 1:])
    return line("HISTORIES"), line("WEIGHTS")


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["jax", "tensorflow"])
def test_one_step_on_two_devices_gives_the_same_weights(backend, tmp_path):
    if backend == "jax":
        pytest.importorskip("jax", reason="the jax extra is not installed")
    h, w = _run(backend, tmp_path)
    one, two = h["1"], h["2"]
    assert w["n"] == 34 and w["max_step"] > 5e-4  # all of VGG19, moved by one Adam step
    # seen: 5.6e-8 (TensorFlow), 3.4e-7 (JAX), for steps of 1.0e-3
    assert w["max_abs_diff"] <= 1e-5, w
    assert abs(one["loss"] - two["loss"]) <= 1e-5, (one, two)
    assert abs(one["val_loss"] - two["val_loss"]) <= 1e-5, (one, two)


def test_one_device_is_a_no_op_and_batches_split_evenly():
    import numpy as np

    from ensemble_dfd.training import accel
    from ensemble_dfd.training.train import TrainData, even_split

    with accel.distribution_scope() as replicas:  # a plain CPU process: one device
        assert replicas == 1
    x = np.zeros((11, 4, 4, 3), np.uint8)
    seen: list[str] = []
    out = even_split(TrainData(x, np.arange(11), x[:5], np.arange(5)), 2, seen.append)
    assert (len(out.x_train), len(out.y_train), len(out.x_val), len(out.y_val)) == (10, 10, 4, 4)
    assert seen and "1 train / 1 validation" in seen[0]


def test_compile_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    from ensemble_dfd.training import accel

    monkeypatch.setenv("ENSEMBLE_DFD_COMPILE_CACHE", str(tmp_path / "c"))
    assert accel.compile_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ENSEMBLE_DFD_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert accel.compile_cache_dir() == tmp_path / "x" / "ensemble_dfd" / "jax"
