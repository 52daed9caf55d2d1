"""Hostile media for the verdict limits' tests: files that declare far more work than they
hold (a header-bomb PNG, a frame-count-bomb MP4, a video cut short), and the process's peak
RSS to show what they cost."""

from __future__ import annotations

import resource
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
from synthetic_media import make_video, truncate


def write_png_bomb(path: Path, width: int = 20000, height: int = 20000) -> Path:
    """A valid PNG declaring width x height pixels (1-bit gray, all zero: ~60 kB on disk,
    1.2 GB once OpenCV decodes it to BGR)."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data)
                     + chunk(b"IEND", b""))
    return path


def write_frame_bomb(path: Path, n_frames: int = 60_000, size: int = 16) -> Path:
    """An MP4 whose container holds n_frames copies of one tiny frame (under 1 MB)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (size, size))
    assert writer.isOpened()
    frame = np.full((size, size, 3), 128, np.uint8)
    for _ in range(n_frames):
        writer.write(frame)
    writer.release()
    return path


def write_cut_avi(path: Path) -> Path:
    """A 300-frame MJPG AVI cut in half: its header still claims 300 frames and the first
    ~150 decode (the 'scored from 1 frame by the CLI, 422 in the server' case)."""
    return truncate(make_video(path, n_frames=300, codec="MJPG"), 0.5)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB
