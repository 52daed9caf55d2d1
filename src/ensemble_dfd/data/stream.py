"""Streaming input: uint8 batches decoded from disk at each step, shuffled per epoch, seeded.

Memory is bounded by the prefetch queue (a few batches), not by the size of the split. The
same `decode_resized` as the in-memory path makes the pixels, so both feed identical inputs.
Batches go to Keras as a `keras.utils.PyDataset`, one code path under TensorFlow, JAX and
torch; its thread pool decodes several batches at once (OpenCV releases the GIL) and keeps
them queued ahead of the model. Keras is imported only when such a dataset is built.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ensemble_dfd.data.images import decode_resized


@dataclass(frozen=True)
class ImageSplit:
    """A split on disk: image files, their labels (1 Real, 0 Fake) and the input size."""

    files: tuple[str, ...]
    labels: np.ndarray
    size: int

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, part: slice) -> ImageSplit:
        """A contiguous part of the split (e.g. trimmed to a multiple of the devices)."""
        if not isinstance(part, slice):
            raise TypeError("an ImageSplit is sliced, not indexed")
        return ImageSplit(self.files[part], self.labels[part], self.size)


def image_split(files: Sequence[str], labels: Sequence[int] | np.ndarray, size: int) -> ImageSplit:
    """Build an ImageSplit, checking that files and labels pair up."""
    labels = np.asarray(labels)
    if len(files) != len(labels):
        raise ValueError(f"{len(files)} files but {len(labels)} labels")
    return ImageSplit(tuple(str(f) for f in files), labels, int(size))


def epoch_order(n: int, seed: int, epoch: int, shuffle: bool = True) -> np.ndarray:
    """The order in which epoch `epoch` visits the n images: a seeded permutation of the
    whole split (a different one every epoch), or 0..n-1 without shuffling."""
    if not shuffle:
        return np.arange(n)
    return np.random.default_rng([int(seed), int(epoch)]).permutation(n)


def read_batch(split: ImageSplit, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decode the images at `indices` into (uint8 x, float32 y)."""
    x = np.empty((len(indices), split.size, split.size, 3), dtype=np.uint8)
    for j, i in enumerate(indices):
        x[j] = decode_resized(split.files[i], split.size)
    return x, split.labels[indices].astype("float32")


class EpochBatches:
    """Batch i of the current epoch, without Keras: the logic the PyDataset wraps.

    The epoch is set from outside (`set_epoch`, called by the `EpochSeed` callback at each
    of fit's epochs, so a resumed fit continues the same sequence of orders). Counting
    epoch ends inside the dataset is not reliable: Keras prefetches batches for its build
    and tensor-spec probes, and signals epoch ends from several places.
    """

    def __init__(self, split: ImageSplit, batch_size: int, shuffle: bool, seed: int,
                 start_epoch: int = 0) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.split, self.batch_size, self.shuffle, self.seed = split, batch_size, shuffle, seed
        self._lock = threading.Lock()
        self.set_epoch(start_epoch)

    def __len__(self) -> int:
        return -(-len(self.split) // self.batch_size)

    def set_epoch(self, epoch: int) -> None:
        with self._lock:
            self.epoch = int(epoch)
            self._order = epoch_order(len(self.split), self.seed, self.epoch, self.shuffle)

    def indices(self, i: int) -> np.ndarray:
        if not 0 <= i < len(self):
            raise IndexError(f"batch {i} out of range (0..{len(self) - 1})")
        with self._lock:
            return self._order[i * self.batch_size:(i + 1) * self.batch_size]

    def batch(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        return read_batch(self.split, self.indices(i))


def keras_batches(split: ImageSplit, batch_size: int, shuffle: bool, seed: int,
                  workers: int = 0, start_epoch: int = 0, queue: int = 0) -> Any:
    """A keras.utils.PyDataset over `split` (works under every Keras backend).

    `workers` threads decode batches in parallel (0: all cores, at least 2 so that Keras
    uses its ordered enqueuer, which prefetches up to `queue` batches, is stopped at each
    epoch's end and restarted after the callbacks' on_epoch_begin). Pass `shuffle=False`
    and `epoch_seed(dataset)` among the callbacks to fit: the dataset shuffles itself,
    seeded, over the whole split, in a new order at every epoch.
    """
    import keras

    workers = max(2, workers or os.cpu_count() or 2)
    queue = queue or 2 * workers

    class StreamedBatches(keras.utils.PyDataset):
        def __init__(self) -> None:
            super().__init__(workers=workers, use_multiprocessing=False, max_queue_size=queue)
            self.source = EpochBatches(split, batch_size, shuffle, seed, start_epoch)

        def __len__(self) -> int:
            return len(self.source)

        def __getitem__(self, i: int) -> tuple[np.ndarray, np.ndarray]:
            return self.source.batch(i)

    return StreamedBatches()


def epoch_seed(dataset: Any) -> Any:
    """A Keras callback that gives a streamed dataset fit's epoch number before each epoch."""
    import keras

    class EpochSeed(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            dataset.source.set_epoch(epoch)

    return EpochSeed()


def fit_arguments(x_train: Any, y_train: np.ndarray, x_val: Any, y_val: np.ndarray,
                  batch_size: int, seed: int,
                  workers: int = 0) -> tuple[dict[str, Any], list[Any]]:
    """(model.fit keyword arguments, extra callbacks) for in-memory arrays or ImageSplits."""
    if isinstance(x_train, ImageSplit):
        train = keras_batches(x_train, batch_size, True, seed, workers)
        val = keras_batches(x_val, batch_size, False, seed, workers)
        return dict(x=train, validation_data=val, shuffle=False), [epoch_seed(train)]
    return dict(x=x_train, y=y_train.astype("float32"), batch_size=batch_size,
                validation_data=(x_val, y_val.astype("float32")), shuffle=True), []
