"""TensorBoard event files written without TensorFlow: per-epoch scalars, hyperparameters,
a resumed run's replaced epochs; read back by TensorBoard's own loader and our reader."""

from __future__ import annotations

import math
import subprocess
import sys

import pandas as pd
import pytest

pytest.importorskip("tensorboard", reason="needs the tensorboard package")

from ensemble_dfd.training.tracking import (  # noqa: E402
    EPOCH_TAGS,
    ModelTracker,
    read_events,
    read_scalars,
)


def _row(epoch: int, loss: float) -> dict:
    return {"epoch": epoch, "phase": 1, "loss": loss, "accuracy": 0.5 + epoch / 10,
            "val_loss": loss + 0.1, "val_accuracy": float("nan"), "seconds": 2.0,
            "images_per_second": 40.0, "lr": 1e-4}


def test_epochs_and_hparams_read_back(tmp_path):
    tracker = ModelTracker(tmp_path / "tb", "M6", ["tensorboard"])
    tracker.start({"lr_frozen": 1e-4, "optimizer_frozen": "adam", "flip": True,
                   "ignored": [1, 2]}, 0)
    for e in (1, 2, 3):
        tracker.epoch(_row(e, 1.0 / e))
    tracker.close()
    # resumed after epoch 2 (epoch 3 ran but was not checkpointed): epoch 3 again
    again = ModelTracker(tmp_path / "tb", "M6", ["tensorboard"])
    again.start({"lr_frozen": 1e-4}, 2)
    again.epoch(_row(3, 0.25))
    again.close()
    scalars = read_scalars(tmp_path / "tb" / "M6")
    assert scalars["train/epoch_loss"] == {1: 1.0, 2: 0.5, 3: 0.25}
    assert scalars["validation/epoch_loss"][1] == pytest.approx(1.1)
    assert scalars["train/epoch_learning_rate"] == {1: pytest.approx(1e-4)} | {
        2: pytest.approx(1e-4), 3: pytest.approx(1e-4)}
    assert "validation/epoch_accuracy" not in scalars  # NaN values are left out
    assert set(scalars) == {f"{s}/{t}" for c, (s, t) in EPOCH_TAGS.items()
                            if c != "val_accuracy"}
    top = read_events(tmp_path / "tb" / "M6")["."]
    tags = {v.tag for ev in top for v in ev.summary.value}
    assert tags == {"_hparams_/session_start_info", "hparams"}


def test_writing_does_not_import_tensorflow(tmp_path):
    code = ("import sys; from ensemble_dfd.training.tracking import ModelTracker\n"
            f"t = ModelTracker(__import__('pathlib').Path({str(tmp_path)!r}), 'M1', "
            "['tensorboard'])\n"
            "t.start({'a': 1}, 0); t.epoch({'epoch': 1, 'loss': 0.5}); t.close()\n"
            "assert 'tensorflow' not in sys.modules, 'tensorflow imported'\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert read_scalars(tmp_path / "M1") == {"train/epoch_loss": {1: 0.5}}


def test_tensorboard_loads_them_and_drops_the_replaced_epoch(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for start, losses in ((0, [1.0, 0.5, 0.4]), (2, [0.25])):
        t = ModelTracker(tmp_path / "tb", "M2", ["tensorboard"])
        t.start({"dropout": 0.2}, start)
        for i, loss in enumerate(losses, start + 1):
            t.epoch(_row(i, loss))
        t.close()
    acc = EventAccumulator(str(tmp_path / "tb" / "M2" / "train"))
    acc.Reload()
    loss = [(e.step, e.value) for e in acc.Scalars("epoch_loss")]
    assert loss == [(1, 1.0), (2, 0.5), (3, 0.25)]  # the first attempt's epoch 3 purged
    top = EventAccumulator(str(tmp_path / "tb" / "M2"))
    top.Reload()
    assert "hparams" in top.Tags()["tensors"]


def test_off_writes_nothing(tmp_path):
    t = ModelTracker(tmp_path / "tb", "M6", [])
    t.start({"dropout": 0.2}, 0)
    t.epoch(_row(1, 1.0))
    t.close()
    assert not (tmp_path / "tb").exists()


@pytest.mark.slow
def test_trained_run_has_event_files(tiny_run):
    """tiny_run trains under the default backend (TensorFlow in CI); test_backends checks
    the same under JAX and torch."""
    for ref in ("M6", "M2"):
        scalars = read_scalars(tiny_run / "tb" / ref)
        history = pd.read_csv(tiny_run / "models" / ref / "history.csv")
        assert sorted(scalars["train/epoch_loss"]) == history["epoch"].tolist()
        assert [scalars["train/epoch_loss"][e] for e in history["epoch"]] == \
            pytest.approx(history["loss"].tolist())
        assert all(math.isfinite(v) and v > 0
                   for v in scalars["train/epoch_images_per_second"].values())
        top = read_events(tiny_run / "tb" / ref)["."]
        hp = [v for ev in top for v in ev.summary.value
              if v.tag == "_hparams_/session_start_info"]
        assert hp, "no hyperparameters"
    stack = read_events(tiny_run / "tb" / "stack")["."]
    text = [v for ev in stack for v in ev.summary.value if v.tag == "comparison"]
    assert text and b"Headline" in text[0].tensor.string_val[0]
