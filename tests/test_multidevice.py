"""Data parallelism over two virtual CPU devices matches one device (TensorFlow and JAX).

Each backend runs in its own process: the device count is fixed when the backend starts.
Tolerance: JAX shards one global computation (BatchNorm sees the whole batch), so its
history matches up to float round-off in the sharded reductions (0.01; 0.0015 seen).
TensorFlow's MirroredStrategy normalises each replica's half batch with its own BatchNorm
statistics (Keras' default, synchronized=False: 8 images per replica here), so its training
loss differs by more: 0.1 absolute (0.011 seen on in-memory arrays, 0.063 on the streamed
files in their seeded order; validation losses within 0.001).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

RUNNER = Path(__file__).with_name("multidevice_run.py")


def _histories(backend: str, tmp_path: Path) -> dict:
    env = {**os.environ, "KERAS_BACKEND": backend, "CUDA_VISIBLE_DEVICES": "",
           "XLA_FLAGS": "--xla_force_host_platform_device_count=2",
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[1] / "src"),
                                          os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, str(RUNNER), str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "data parallel over 2 devices" in proc.stdout, proc.stdout[-2000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("HISTORIES "))
    return json.loads(line[len("HISTORIES "):])


@pytest.mark.slow
@pytest.mark.parametrize("backend,tol", [("jax", 0.01), ("tensorflow", 0.1)])
def test_two_devices_match_one(backend, tol, tmp_path):
    if backend == "jax":
        pytest.importorskip("jax", reason="the jax extra is not installed")
    h = _histories(backend, tmp_path)
    one, two = h["1"], h["2"]
    for key in ("loss", "val_loss"):
        assert abs(one[key] - two[key]) <= tol, (key, one, two)
    for key in ("accuracy", "val_accuracy"):
        assert abs(one[key] - two[key]) <= max(tol, 1 / 16 + 1e-6), (key, one, two)


def test_one_device_is_a_no_op_and_batches_split_evenly():
    import numpy as np

    from ensemble_dfd import accel
    from ensemble_dfd.train import TrainData, even_split

    with accel.distribution_scope() as replicas:  # a plain CPU process: one device
        assert replicas == 1
    x = np.zeros((11, 4, 4, 3), np.uint8)
    seen: list[str] = []
    out = even_split(TrainData(x, np.arange(11), x[:5], np.arange(5)), 2, seen.append)
    assert (len(out.x_train), len(out.y_train), len(out.x_val), len(out.y_val)) == (10, 10, 4, 4)
    assert seen and "1 train / 1 validation" in seen[0]


def test_compile_cache_folder_follows_the_environment(monkeypatch, tmp_path):
    from ensemble_dfd import accel

    monkeypatch.setenv("ENSEMBLE_DFD_COMPILE_CACHE", str(tmp_path / "c"))
    assert accel.compile_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("ENSEMBLE_DFD_COMPILE_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert accel.compile_cache_dir() == tmp_path / "x" / "ensemble_dfd" / "jax"
