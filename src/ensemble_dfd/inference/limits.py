"""Bounds on the work and memory one verdict may cost, checked before the cost is paid.

- ``Limits``: frames decoded per video, pixels per image or video frame, seconds per input.
- ``image_dimensions``: an image's (width, height) read from its header (PNG, JPEG, WebP,
  BMP, TIFF) without decoding it, so a 1 MB PNG declaring 20000x20000 pixels is refused
  before OpenCV allocates 1.2 GB for it.
- ``Deadline``: a per-request clock (and a cancel flag set when the client goes away) that
  long loops check between steps.

Pure and OpenCV-free: file I/O is limited to reading a header.
"""

from __future__ import annotations

import struct
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class LimitExceeded(ValueError):
    """An input that would cost more than a limit allows (its message says which);
    ``reason`` is 'size' (pixels), 'time' or 'cancelled'."""

    def __init__(self, message: str, reason: str = "size"):
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Limits:
    """Per-input bounds for ``predict`` and ``serve``.

    max_frames: video frames decoded and scored at most (the kept frames are spread over the
        video when the frame step would keep more);
    max_pixels: width x height of an image or a video frame (25 MP: ~75 MB per decoded copy);
    seconds: wall time for one input (checked between frames; 0 = none);
    sequential_frames: a video whose last wanted frame is beyond this is read by seeking to
        each wanted frame instead of walking every frame (a container claiming 60,000 frames
        costs ``max_frames`` seeks, not 60,000 decodes);
    max_decoded_frames: frames a video may cost the decoder (seeks decode from the keyframe
        before each wanted frame; the keyframe layout is read first, without decoding, and
        wanted frames out of reach are moved toward their keyframes: data/decode_plan.py);
    keyframes: decode only keyframes, at most ``max_frames`` of them spread over the video,
        instead of the run's frame step (``data/keyframes.py``; fast, but not the frames
        the run's faces were cut from).
    """

    max_frames: int = 32
    max_pixels: int = 25_000_000
    seconds: float = 60.0
    sequential_frames: int = 1500
    keyframes: bool = False
    max_decoded_frames: int = 500

    def __post_init__(self) -> None:
        if self.max_frames < 1:
            raise ValueError(f"max_frames must be >= 1, got {self.max_frames}")
        if self.max_pixels < 1:
            raise ValueError(f"max_pixels must be >= 1, got {self.max_pixels}")
        if self.seconds < 0:
            raise ValueError(f"seconds must be >= 0, got {self.seconds}")
        if self.max_decoded_frames < 1:
            raise ValueError(f"max_decoded_frames must be >= 1, got {self.max_decoded_frames}")


NO_LIMITS = Limits(max_frames=1 << 30, max_pixels=1 << 40, seconds=0.0,
                   sequential_frames=1 << 30, max_decoded_frames=1 << 40)


def check_pixels(width: int, height: int, max_pixels: int) -> None:
    """Raise LimitExceeded when a width x height picture is over ``max_pixels``."""
    if width <= 0 or height <= 0:
        raise LimitExceeded(f"declares an empty size ({width}x{height} px)")
    if width * height > max_pixels:
        raise LimitExceeded(f"{width}x{height} px is over the limit of "
                            f"{max_pixels / 1e6:g} megapixels")


class Deadline:
    """Wall-clock budget of one request, plus a cancel flag (client gone, server stopping)."""

    def __init__(self, seconds: float = 0.0, cancel: threading.Event | None = None):
        self.seconds = seconds
        self.start = time.monotonic()
        self.cancel = cancel or threading.Event()

    def remaining(self) -> float:
        if self.seconds <= 0:
            return float("inf")
        return self.seconds - (time.monotonic() - self.start)

    def check(self) -> None:
        """Raise LimitExceeded when cancelled or out of time."""
        if self.cancel.is_set():
            raise LimitExceeded("cancelled (the client went away or the server is stopping)",
                                "cancelled")
        if self.remaining() < 0:
            raise LimitExceeded(f"took longer than the limit of {self.seconds:g} s", "time")


# ---------------------------------------------------------------- image headers


def image_dimensions(fh: BinaryIO) -> tuple[int, int] | None:
    """(width, height) from an image file's header, or None if it cannot be read there.

    Reads at most a few kB (JPEG: walks segment headers, seeking over their bodies).
    """
    head = fh.read(32)
    if head.startswith(b"\x89PNG\r\n\x1a\n") and head[12:16] == b"IHDR":
        return struct.unpack(">II", head[16:24])
    if head.startswith(b"\xff\xd8"):
        return _jpeg_dimensions(fh)
    if head.startswith(b"BM") and len(head) >= 26:
        header_size = struct.unpack("<I", head[14:18])[0]
        if header_size == 12:  # OS/2 BITMAPCOREHEADER: 16-bit sizes
            w, h = struct.unpack("<HH", head[18:22])
        else:
            w, h = struct.unpack("<ii", head[18:26])
        return abs(w), abs(h)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_dimensions(head)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_dimensions(fh, "<" if head[:2] == b"II" else ">")
    return None


def image_file_dimensions(path: str | Path) -> tuple[int, int] | None:
    with Path(path).open("rb") as fh:
        return image_dimensions(fh)


# SOF markers carry the frame size; C4 (DHT), C8 (JPG) and CC (DAC) do not
_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}
_MAX_SEGMENTS = 1000


def _jpeg_dimensions(fh: BinaryIO) -> tuple[int, int] | None:
    fh.seek(2)
    for _ in range(_MAX_SEGMENTS):
        b = fh.read(1)
        while b == b"\xff":  # fill bytes before a marker
            b = fh.read(1)
        if not b:
            return None
        marker = b[0]
        if marker in (0x01, *range(0xD0, 0xD8)):  # stand-alone markers, no length
            continue
        if marker in (0xD9, 0xDA):  # end of image / start of scan before any frame header
            return None
        raw = fh.read(2)
        if len(raw) < 2:
            return None
        length = struct.unpack(">H", raw)[0]
        if length < 2:
            return None
        if marker in _SOF:
            body = fh.read(5)
            if len(body) < 5:
                return None
            h, w = struct.unpack(">HH", body[1:5])
            return w, h
        fh.seek(length - 2, 1)
        nxt = fh.read(1)
        if nxt != b"\xff":
            return None
    return None


def _webp_dimensions(head: bytes) -> tuple[int, int] | None:
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        w = int.from_bytes(head[24:27], "little") + 1
        h = int.from_bytes(head[27:30], "little") + 1
        return w, h
    if chunk == b"VP8 " and len(head) >= 30 and head[23:26] == b"\x9d\x01\x2a":
        w, h = struct.unpack("<HH", head[26:30])
        return w & 0x3FFF, h & 0x3FFF
    if chunk == b"VP8L" and len(head) >= 25 and head[20] == 0x2F:
        bits = int.from_bytes(head[21:25], "little")
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    return None


def _tiff_dimensions(fh: BinaryIO, order: str) -> tuple[int, int] | None:
    fh.seek(4)
    offset = struct.unpack(order + "I", fh.read(4))[0]
    fh.seek(offset)
    raw = fh.read(2)
    if len(raw) < 2:
        return None
    n = min(struct.unpack(order + "H", raw)[0], 512)
    found: dict[int, int] = {}
    for _ in range(n):
        entry = fh.read(12)
        if len(entry) < 12:
            break
        tag, typ = struct.unpack(order + "HH", entry[:4])
        if tag in (256, 257):  # ImageWidth, ImageLength: SHORT (3) or LONG (4)
            fmt = order + ("H" if typ == 3 else "I")
            found[tag] = struct.unpack(fmt, entry[8:8 + struct.calcsize(fmt)])[0]
    if 256 in found and 257 in found:
        return found[256], found[257]
    return None
