"""Video -> frames: keep every N-th frame (or one every S seconds), width capped, aspect kept.

The study meant "one frame every 120 frames" but its loop advanced the reader by one frame per
120 counter steps. Here the reader walks every frame with ``grab()`` (cheap: no colour
conversion, no copy) and calls ``retrieve()`` only on the frames it keeps, which is exact
(unlike seeking with CAP_PROP_POS_FRAMES, which lands on key frames for some codecs).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from itertools import count, takewhile
from pathlib import Path

import cv2
import numpy as np

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv",
                  ".flv", ".3gp", ".ts")


class VideoReadError(ValueError):
    """A video that cannot be opened or decoded."""


# ---------------------------------------------------------------- pure selection logic


def iter_kept_indices(every: int = 120, every_seconds: float = 0.0,
                      fps: float = 0.0) -> Iterator[int]:
    """Increasing frame indices to keep, without end (the frame count may be unknown).

    ``every_seconds > 0`` wins over ``every``: frame ``round(k * S * fps)`` for k = 0, 1, ...
    (duplicates removed, so S shorter than one frame keeps every frame).
    """
    if every_seconds and every_seconds > 0:
        if not fps or fps <= 0 or math.isnan(fps):
            raise ValueError("every_seconds needs the video's frame rate (fps > 0)")
        last = -1
        for k in count():
            idx = math.floor(k * every_seconds * fps + 0.5)  # half up, not to even
            if idx > last:
                last = idx
                yield idx
    else:
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        yield from count(0, every)


def kept_indices(n_frames: int, every: int = 120, every_seconds: float = 0.0,
                 fps: float = 0.0) -> list[int]:
    """The frame indices kept from a video of ``n_frames`` frames (0, N, 2N, ... < n)."""
    return list(takewhile(lambda i: i < n_frames, iter_kept_indices(every, every_seconds, fps)))


def scaled_size(width: int, height: int, max_width: int = 640) -> tuple[int, int]:
    """(width, height) after capping the width at ``max_width``, aspect kept; 0 = no cap."""
    if max_width <= 0 or width <= max_width:
        return width, height
    return max_width, max(1, int(round(height * max_width / width)))


def frame_name(video: str | Path, index: int) -> str:
    """The study's frame name: ``<video stem><frame index>`` (e.g. 519 + 120 -> 519120)."""
    return f"{Path(video).stem}{index}"


# ---------------------------------------------------------------- I/O


def cap_width(frame: np.ndarray, max_width: int = 640) -> np.ndarray:
    """Downscale a frame wider than ``max_width`` (INTER_AREA: the right filter to shrink)."""
    h, w = frame.shape[:2]
    new_w, new_h = scaled_size(w, h, max_width)
    if (new_w, new_h) == (w, h):
        return frame
    return cv2.resize(frame, (new_w, new_h), interpolation=cv2.INTER_AREA)


@dataclass
class FrameReport:
    """What reading one video gave: frames walked, frames kept, and any problem."""

    path: str
    frame_count: int = 0  # what the container claims (may be 0 or approximate)
    fps: float = 0.0
    frames_read: int = 0  # frames actually walked through
    frames_kept: int = 0
    error: str = ""
    kept: list[int] = field(default_factory=list)


# A container's frame count can be off by a frame or two; fewer than this share of it means
# the file ended early (truncated download, cut copy).
TRUNCATED_BELOW = 0.95


def iter_frames(path: str | Path, every: int = 120, every_seconds: float = 0.0,
                max_width: int = 640, report: FrameReport | None = None,
                ) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (frame index, BGR frame) for the kept frames of a video.

    Raises VideoReadError (naming the file) when the video cannot be opened or yields no
    frame at all. A video that ends well before its declared length is not an error here
    (the frames read so far are good): ``report.error`` says it was truncated.
    """
    path = Path(path)
    report = report if report is not None else FrameReport(str(path))
    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: empty file")
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise VideoReadError(f"{path}: cannot open as a video (corrupt or not a video)")
        report.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        report.frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        try:
            targets = iter_kept_indices(every, every_seconds, report.fps)
        except ValueError as exc:
            raise VideoReadError(f"{path}: {exc}") from exc
        target = next(targets)
        index = 0
        while cap.grab():
            if index == target:
                ok, frame = cap.retrieve()
                if not ok or frame is None:
                    report.error = f"frame {index} could not be decoded"
                    break
                report.frames_kept += 1
                report.kept.append(index)
                report.frames_read = index + 1
                yield index, cap_width(frame, max_width)
                target = next(targets)
            index += 1
        report.frames_read = index
    finally:
        cap.release()
    if report.frames_read == 0:
        raise VideoReadError(f"{path}: no frame could be decoded (corrupt or not a video)")
    if not report.error and report.frame_count and (
            report.frames_read < TRUNCATED_BELOW * report.frame_count):
        report.error = (f"truncated: read {report.frames_read} of "
                        f"{report.frame_count} declared frames")


def read_frames(path: str | Path, every: int = 120, every_seconds: float = 0.0,
                max_width: int = 640) -> tuple[list[tuple[int, np.ndarray]], FrameReport]:
    """All kept frames of a video in memory, with the report."""
    report = FrameReport(str(path))
    frames = list(iter_frames(path, every, every_seconds, max_width, report))
    return frames, report
