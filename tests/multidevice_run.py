"""Run by test_multidevice.py in a fresh process (the device count is fixed at start-up):
one training step of M2 (VGG19: no BatchNorm, so no per-replica statistics; 16 synthetic
faces, one batch) on one device, then data-parallel on two, from the same start; prints
both histories and the largest weight difference between the two trained models as JSON.
The faces are PNG files streamed from disk, as base_train feeds them. Nothing differs
between the runs but the devices: no augmentation or dropout, and no BatchNorm (M6, from
scratch, trains its BatchNorm: each TensorFlow replica would normalise its own half batch).
Usage: python multidevice_run.py OUT_DIR."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

if os.environ.get("KERAS_BACKEND") == "tensorflow":
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from ensemble_dfd.config import load_config  # noqa: E402
from ensemble_dfd.data.stream import image_split  # noqa: E402
from ensemble_dfd.training import (
    accel,
    backbones,  # noqa: E402
)
from ensemble_dfd.training.modeldir import ModelDir  # noqa: E402
from ensemble_dfd.training.plan import plan_model  # noqa: E402
from ensemble_dfd.training.train import TrainData, train_one  # noqa: E402


def main(out: Path) -> None:
    rng = np.random.default_rng(0)
    y = np.tile([0, 1], 24)
    x = rng.integers(0, 256, (48, 32, 32, 3), dtype=np.uint8)
    x[y == 1, 8:24, 8:24] //= 2  # something to learn
    (out / "faces").mkdir(parents=True, exist_ok=True)
    files = []
    for i, img in enumerate(x):  # PNG: lossless, so the streamed pixels are these
        files.append(str(out / "faces" / f"{i:02d}.png"))
        cv2.imwrite(files[-1], img[..., ::-1])
    # one batch of 16: one step
    data = TrainData(image_split(files[:16], y[:16], 32), y[:16],
                     image_split(files[32:], y[32:], 32), y[32:])
    # no randomness that two replicas would draw differently: no flips, rotation or dropout
    cfg = load_config(None, {"data": {"image_size": 32, "batch_size": 16}, "train": {
        "weights": "none", "freeze_base": False, "base_bn_training": False, "bn_momentum": 0.9,
        "epochs_frozen": 1, "epochs_finetune": 0, "lr_frozen": 1e-3, "dropout": 0.0,
        "flip": False, "rotation": 0.0, "mixed_precision": "off"}})
    found = accel.data_parallel_devices()
    assert len(found) == 2, f"expected two devices, found {found}"
    histories = {}
    real = accel.data_parallel_devices
    start = same_start()
    for n in (1, 2):
        accel.data_parallel_devices = (lambda: real()[:1]) if n == 1 else real
        model_dir = ModelDir(out / str(n))
        train_one(plan_model(cfg, "M2"), data, model_dir, log=print)
        histories[n] = model_dir.history().iloc[0].to_dict()
    print("HISTORIES " + json.dumps(histories))
    print("WEIGHTS " + json.dumps(weight_difference(out / "1", out / "2", start)))


def same_start() -> list:
    """Both runs start from the very same weights: the first build's initial weights are
    kept and given to the second (a strategy scope may draw initial values differently).
    Returns the list that holds them."""
    real_build, kept = backbones.build_model, []

    def build(*args, **kwargs):
        model, base = real_build(*args, **kwargs)
        if kept:
            model.set_weights(kept)
        else:
            kept.extend(model.get_weights())
        return model, base

    backbones.build_model = build
    return kept


def weight_difference(a: Path, b: Path, start: list) -> dict[str, float]:
    """Largest |w1 - w2| over all weights of the two trained models, and the largest change
    the step made, so the test can tell float round-off from a different step."""
    from ensemble_dfd.training.train import load_model

    wa = load_model(ModelDir(a).model_file, compile=False).get_weights()
    wb = load_model(ModelDir(b).model_file, compile=False).get_weights()
    assert len(wa) == len(wb) == len(start)
    assert all(x.shape == y.shape for x, y in zip(wa, wb, strict=True))
    return {"max_abs_diff": max(float(np.max(np.abs(x - y))) for x, y in zip(wa, wb,
                                                                                strict=True)),
            "max_step": max(float(np.max(np.abs(x - s))) for x, s in zip(wa, start,
                                                                         strict=True)),
            "n": len(wa)}


if __name__ == "__main__":
    main(Path(sys.argv[1]))
