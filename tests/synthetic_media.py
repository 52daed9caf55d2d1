"""Synthetic test media: small videos and images written with OpenCV in a tmp folder."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def make_video(path: Path, n_frames: int = 30, size: tuple[int, int] = (160, 120),
               fps: float = 25.0, codec: str = "mp4v") -> Path:
    """A video whose frame i is a flat gray of level 4*i (so a frame's index can be read
    back from its mean, give or take compression)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), fps, (w, h))
    assert writer.isOpened(), f"cannot write {path}"
    for i in range(n_frames):
        writer.write(np.full((h, w, 3), (4 * i) % 256, np.uint8))
    writer.release()
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


def make_image(path: Path, size: tuple[int, int] = (64, 48), seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    img = (rng.random((size[1], size[0], 3)) * 255).astype(np.uint8)
    img = cv2.GaussianBlur(img, (0, 0), 2)
    assert cv2.imwrite(str(path), img)
    return path
