"""Which accelerator the Keras backend sees, and the precision/distribution choices that follow.

Imports the backend lazily: call only from code that builds or runs models.
"""

from __future__ import annotations

import contextlib
import os
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


def set_precision(mode: str) -> str:
    """'on' / 'off' / 'auto' (on when a GPU is visible) / 'bf16' -> the global dtype policy."""
    import keras

    use = mode == "on" or (mode == "auto" and bool(gpu_names()))
    policy = "mixed_bfloat16" if mode == "bf16" else "mixed_float16" if use else "float32"
    keras.mixed_precision.set_global_policy(policy)
    return policy


def strategy_scope() -> Any:
    """MirroredStrategy's scope when TensorFlow sees several GPUs, else a no-op."""
    if backend() == "tensorflow" and len(gpu_names()) > 1:
        import tensorflow as tf

        return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()


def describe() -> dict[str, Any]:
    gpus = gpu_names()
    return {
        "keras_backend": backend(),
        "device": gpus[0] if gpus else "cpu",
        "gpus": gpus,
        "cpu_count": os.cpu_count(),
    }
