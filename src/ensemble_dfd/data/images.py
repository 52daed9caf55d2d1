"""Image decoding with OpenCV: one place that turns files into RGB uint8 arrays."""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np

from ensemble_dfd.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


class ImageReadError(UserError, ValueError):
    """A file that is not a readable image."""


def read_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file to an RGB uint8 array (H, W, 3); raise naming the file."""
    return cv2.cvtColor(read_bgr(path), cv2.COLOR_BGR2RGB)


def read_bgr(path: str | Path) -> np.ndarray:
    """Decode an image file to OpenCV's BGR uint8 array (H, W, 3); raise naming the file."""
    path = Path(path)
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as exc:
        raise ImageReadError(f"{path}: cannot read file ({exc.strerror})") from exc
    if data.size == 0:
        raise ImageReadError(f"{path}: empty file")
    img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if img is None:
        raise ImageReadError(f"{path}: not a decodable image (corrupt or not an image)")
    return img


def resize(img: np.ndarray, size: int) -> np.ndarray:
    """Square resize without keeping aspect, as Keras' image_dataset_from_directory does."""
    if img.shape[0] == size and img.shape[1] == size:
        return img
    return cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)


def decode_resized(path: str | Path, size: int) -> np.ndarray:
    """One file as a (size, size, 3) RGB uint8 array: the pixels every input path feeds."""
    # resize first: the channel swap then touches size*size pixels, not the whole image
    # (both are per-pixel, so the result is identical)
    return cv2.cvtColor(resize(read_bgr(path), size), cv2.COLOR_BGR2RGB)


def load_images(files: Sequence[str | Path], size: int, workers: int = 0) -> np.ndarray:
    """Decode and resize many files into one (N, size, size, 3) uint8 array, in order.

    OpenCV releases the GIL while decoding, so threads use all cores.
    """
    out = np.empty((len(files), size, size, 3), dtype=np.uint8)

    def one(i: int) -> None:
        out[i] = decode_resized(files[i], size)

    workers = workers or os.cpu_count() or 1
    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, range(len(files))))
    return out


def stream_images(files: Sequence[str | Path], size: int, batch_size: int,
                  workers: int = 0) -> Iterator[np.ndarray]:
    """Yield decoded batches of `files` in order, decoding the next batch in the background.

    While the caller runs a model on one batch, the following one is being decoded, so
    inference never waits for JPEG decoding except on the first batch.
    """
    chunks = [files[i:i + batch_size] for i in range(0, len(files), batch_size)]
    if not chunks:
        return
    with ThreadPoolExecutor(max_workers=1) as ahead:
        pending = ahead.submit(load_images, chunks[0], size, workers)
        for nxt in chunks[1:]:
            ready = pending.result()
            pending = ahead.submit(load_images, nxt, size, workers)
            yield ready
        yield pending.result()
