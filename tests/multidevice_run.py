"""Run by test_multidevice.py in a fresh process (the device count is fixed at start-up):
train M6 for one epoch on synthetic faces on one device, then data-parallel on two, and
print both histories as JSON. The faces are PNG files streamed from disk, as base_train
feeds them. Usage: python multidevice_run.py OUT_DIR."""

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
import pandas as pd  # noqa: E402

from ensemble_dfd import accel, backbones  # noqa: E402
from ensemble_dfd.config import load_config  # noqa: E402
from ensemble_dfd.data.stream import image_split  # noqa: E402
from ensemble_dfd.train import TrainData, train_one  # noqa: E402


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
    data = TrainData(image_split(files[:32], y[:32], 32), y[:32],
                     image_split(files[32:], y[32:], 32), y[32:])
    # no randomness that two replicas would draw differently: no flips, rotation or dropout
    cfg = load_config(None, {"data": {"image_size": 32, "batch_size": 16}, "train": {
        "weights": "none", "freeze_base": False, "base_bn_training": True, "bn_momentum": 0.9,
        "epochs_frozen": 1, "epochs_finetune": 0, "lr_frozen": 1e-3, "dropout": 0.0,
        "flip": False, "rotation": 0.0, "mixed_precision": "off"}})
    found = accel.data_parallel_devices()
    assert len(found) == 2, f"expected two devices, found {found}"
    histories = {}
    real = accel.data_parallel_devices
    for n in (1, 2):
        accel.data_parallel_devices = (lambda: real()[:1]) if n == 1 else real
        train_one(backbones.get("M6"), cfg, data, out / str(n), log=print)
        histories[n] = pd.read_csv(out / str(n) / "history.csv").iloc[0].to_dict()
    print("HISTORIES " + json.dumps(histories))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
