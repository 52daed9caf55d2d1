"""Streaming input: the same pixels as the in-memory path, every image once per epoch in a
seeded order that changes per epoch, and correct epoch boundaries inside a real model.fit."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import write_noise_jpegs

from ensemble_dfd.data.images import load_images
from ensemble_dfd.data.stream import (
    EpochBatches,
    epoch_order,
    epoch_seed,
    fit_arguments,
    image_split,
    keras_batches,
)


@pytest.fixture()
def split(tmp_path):
    return image_split(write_noise_jpegs(tmp_path, 23, widen=True), np.arange(23) % 2, 16)


def _epoch(batches: EpochBatches, epoch: int | None = None) -> tuple:
    if epoch is not None:
        batches.set_epoch(epoch)
    idx = np.concatenate([batches.indices(i) for i in range(len(batches))])
    parts = [batches.batch(i) for i in range(len(batches))]
    return idx, np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def test_streamed_pixels_equal_in_memory_in_each_epochs_order(split):
    whole = load_images(list(split.files), 16)
    batches = EpochBatches(split, 5, shuffle=True, seed=7)
    assert len(batches) == 5
    orders = []
    for epoch in range(3):
        idx, x, y = _epoch(batches, epoch)
        assert sorted(idx) == list(range(23))  # the whole split, each image once
        np.testing.assert_array_equal(idx, epoch_order(23, 7, epoch))
        assert x.dtype == np.uint8 and y.dtype == np.float32
        np.testing.assert_array_equal(x, whole[idx])
        np.testing.assert_array_equal(y, split.labels[idx])
        orders.append(idx)
    assert not np.array_equal(orders[0], orders[1])
    assert not np.array_equal(orders[1], orders[2])
    again = EpochBatches(split, 5, shuffle=True, seed=7)
    np.testing.assert_array_equal(_epoch(again)[0], orders[0])  # seeded
    other = EpochBatches(split, 5, shuffle=True, seed=8)
    assert not np.array_equal(_epoch(other)[0], orders[0])
    resumed = EpochBatches(split, 5, shuffle=True, seed=7, start_epoch=2)
    np.testing.assert_array_equal(_epoch(resumed)[0], orders[2])


def test_unshuffled_order_and_bad_index(split):
    unshuffled = EpochBatches(split, 5, shuffle=False, seed=1)
    np.testing.assert_array_equal(_epoch(unshuffled, 4)[0], np.arange(23))
    with pytest.raises(IndexError):
        unshuffled.indices(5)


@pytest.mark.parametrize("initial_epoch", [0, 2])
def test_fit_sees_every_image_once_per_epoch(split, initial_epoch):
    """A real Keras fit over the PyDataset (under the active backend), resumed or not: each
    epoch's batches, whatever Keras prefetched or probed, come from that epoch's order."""
    import keras

    ds = keras_batches(split, 5, shuffle=True, seed=3, workers=2)
    seen: dict[int, list[int]] = {}
    read: dict[int, set[int]] = {}  # batches decoded under each epoch's order
    decode = ds.source.batch

    def spy(i):
        read.setdefault(ds.source.epoch, set()).add(i)
        return decode(i)

    ds.source.batch = spy

    class Consumed(keras.callbacks.Callback):  # indices of the batch each step trained on
        def on_train_batch_begin(self, batch, logs=None):
            seen.setdefault(ds.source.epoch, []).extend(ds.source.indices(batch).tolist())

    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255),
                              keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1)])
    model.compile("sgd", keras.losses.BinaryCrossentropy(from_logits=True))
    history = model.fit(ds, epochs=initial_epoch + 2, initial_epoch=initial_epoch,
                        shuffle=False, verbose=0, callbacks=[epoch_seed(ds), Consumed()])
    assert len(history.history["loss"]) == 2
    assert sorted(seen) == [initial_epoch, initial_epoch + 1]
    for epoch, idx in seen.items():
        np.testing.assert_array_equal(idx, epoch_order(23, 3, epoch))
        assert read[epoch] == set(range(len(ds)))  # none decoded early under the old order


def test_fit_arguments_for_arrays_and_streams(split):
    x = np.zeros((4, 16, 16, 3), np.uint8)
    y = np.array([0, 1, 0, 1])
    kw, callbacks = fit_arguments(x, y, x, y, batch_size=2, seed=0)
    assert callbacks == [] and kw["shuffle"] is True and kw["batch_size"] == 2
    assert kw["y"].dtype == np.float32
    kw, callbacks = fit_arguments(split, split.labels, split, split.labels, batch_size=4, seed=0)
    assert len(callbacks) == 1 and kw["shuffle"] is False and "y" not in kw
    assert len(kw["x"]) == 6 and kw["x"].source.shuffle and not kw["validation_data"].source.shuffle
    with pytest.raises(ValueError, match="3 files but 2 labels"):
        image_split(["a", "b", "c"], [0, 1], 16)


def test_load_split_streams_the_pixels_in_memory_would_hold(synthetic_dataset):
    from ensemble_dfd.base_train import load_split
    from ensemble_dfd.config import load_config
    from ensemble_dfd.data.dataset import load_dataset
    from ensemble_dfd.data.stream import ImageSplit, read_batch
    from ensemble_dfd.training.plan import plan_model

    df = load_dataset(synthetic_dataset)
    streamed, y1 = load_split(df, plan_model(load_config(None, {"data": {"image_size": 32}}),
                                             "M6"), "train")
    arrays, y2 = load_split(df, plan_model(load_config(None, {"data": {
        "image_size": 32, "in_memory": True}}), "M6"), "train")
    assert isinstance(streamed, ImageSplit) and isinstance(arrays, np.ndarray)
    np.testing.assert_array_equal(y1, y2)
    x, y = read_batch(streamed, np.arange(len(streamed)))
    np.testing.assert_array_equal(x, arrays)
    np.testing.assert_array_equal(y, y2)


def test_memory_readings():
    from ensemble_dfd.training import memory

    memory.release()
    memory.reset_peak()
    block = np.ones(64 * 2**20, np.uint8)  # 64 MB touched
    assert memory.peak_rss_mb() >= memory.rss_mb() - 1 > 64
    del block


def test_run_records_peak_rss_and_collect_without_cache_agrees(tiny_run, synthetic_dataset,
                                                              tmp_path):
    """base_train wrote each model's peak RSS; collect with no decoded-image cache (the
    bounded path for large sets) gives the same logits as the cached one."""
    import json
    import shutil

    import pandas as pd

    from ensemble_dfd.collect import collect
    from ensemble_dfd.stacking.logits import LOGITS_FILE

    for ref in ("M6", "M2"):
        done = json.loads((tiny_run / "models" / ref / "done.json").read_text())
        assert done["peak_rss_mb"] > 100 and done["rss_mb_after"] > 100
    assert "memory: peak RSS" in (tiny_run / "base_train.log").read_text()
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    old = pd.read_parquet(run / LOGITS_FILE)
    new = collect(run, synthetic_dataset, ["test"], refs=["M6", "M2"], overwrite=True,
                  log=lambda _: None, cache_mb=0)
    merged = old[old["split"] == "test"].merge(new, on=["model", "path"])
    assert len(merged) == len(new) > 0
    np.testing.assert_allclose(merged["logit_x"], merged["logit_y"], rtol=1e-5, atol=1e-5)
