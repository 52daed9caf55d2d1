"""Which accelerator the Keras backend sees, and the precision/distribution choices that follow.

Imports the backend lazily: call only from code that builds or runs models.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def backend() -> str:
    import keras

    return keras.backend.backend()


def gpu_names() -> list[str]:
    """Names of the GPUs the active Keras backend can use (empty on CPU)."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        out = []
        for gpu in gpus:
            details = tf.config.experimental.get_device_details(gpu)
            out.append(details.get("device_name", gpu.name))
        return out
    if name == "jax":
        import jax

        return [str(d.device_kind) for d in jax.devices() if d.platform == "gpu"]
    if name == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


ONEDNN_ENV = "TF_ENABLE_ONEDNN_OPTS"


def set_onednn(on: bool) -> str | None:
    """Switch TensorFlow's oneDNN CPU kernels on or off (``train.onednn``) for this process
    and the processes it starts; returns a warning where TensorFlow was imported already
    with the other setting (the variable is read once, at import). Off, the ten-model CPU
    profile's largest models peaked ~0.5 GB lower (benchmarks/tf_onednn.py).
    """
    import sys

    want = "1" if on else "0"
    before = os.environ.get(ONEDNN_ENV)
    os.environ[ONEDNN_ENV] = want
    if "tensorflow" in sys.modules and (before or "1") != want:
        return (f"train.onednn = {str(on).lower()} comes too late for this process: "
                "TensorFlow was imported already")
    return None


def set_precision(mode: str) -> str:
    """'on' / 'off' / 'auto' (on when a GPU is visible) / 'bf16' -> the global dtype policy."""
    import keras

    use = mode == "on" or (mode == "auto" and bool(gpu_names()))
    policy = "mixed_bfloat16" if mode == "bf16" else "mixed_float16" if use else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def compile_cache_dir() -> Path:
    """$ENSEMBLE_DFD_COMPILE_CACHE, else ~/.cache/ensemble_dfd/jax (XDG_CACHE_HOME honoured)."""
    env = os.environ.get("ENSEMBLE_DFD_COMPILE_CACHE")
    if env:
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "ensemble_dfd" / "jax"


def enable_compile_cache(folder: str | Path | None = None) -> Path | None:
    """JAX: keep compiled XLA programs on disk, so a rerun or a resumed run does not compile
    the same train/test/predict steps again (a user cache by default, shared by runs: the
    key is the program itself, so different models and sizes do not collide). Other
    backends: nothing to do (TensorFlow and torch compile cheaply on first use)."""
    if backend() != "jax":
        return None
    import jax

    path = Path(folder) if folder else compile_cache_dir()
    path.mkdir(parents=True, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", str(path))
    # cache every program that took a noticeable time to compile, whatever its size
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path


def data_parallel_devices() -> list[str]:
    """The devices one model's batches are split over: every GPU when there are several,
    else every CPU device the backend was configured with (TensorFlow logical CPUs, or JAX's
    XLA_FLAGS=--xla_force_host_platform_device_count=N; a plain CPU process has one).
    Under torch Keras has no data parallelism: one device."""
    name = backend()
    if name == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_logical_devices("GPU")
        return [d.name for d in gpus or tf.config.list_logical_devices("CPU")]
    if name == "jax":
        import jax

        devices = jax.devices()  # the default platform's devices: the GPUs when there are any
        return [str(d) for d in devices]
    return []


@contextlib.contextmanager
def distribution_scope(log: Any = None) -> Iterator[int]:
    """Build, compile and fit inside this to use every device: MirroredStrategy under
    TensorFlow, keras.distribution.DataParallel under JAX, nothing with one device (or torch).
    Yields the number of replicas; the fit batch size stays the global batch size, so the
    schedule (steps per epoch, learning rates) is the same as on one device."""
    devices = data_parallel_devices()
    if len(devices) < 2:
        yield 1
        return
    name = backend()
    if log:
        log(f"data parallel over {len(devices)} devices ({name}): {', '.join(devices)}")
    if name == "tensorflow":
        import tensorflow as tf

        with tf.distribute.MirroredStrategy(devices).scope():
            yield len(devices)
        return
    import jax
    import keras

    with keras.distribution.DataParallel(devices=jax.devices()).scope():
        yield len(devices)


def describe() -> dict[str, Any]:
    gpus = gpu_names()
    return {
        "keras_backend": backend(),
        "device": gpus[0] if gpus else "cpu",
        "gpus": gpus,
        "cpu_count": os.cpu_count(),
    }
