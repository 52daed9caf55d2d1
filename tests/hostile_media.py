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


def write_scan_bomb(path: Path, scans: int = 5000, size: int = 512) -> Path:
    """A valid progressive JPEG whose last scan is repeated ``scans`` times (a few bytes
    each): libjpeg only warns about the repeats and decodes the whole picture once per
    scan, so the decode costs scans x pixels while the file stays small."""
    ok, buf = cv2.imencode(".jpg", np.full((size, size, 3), 128, np.uint8),
                           [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok
    data = buf.tobytes()
    last = data.rfind(b"\xff\xda")
    scan, end = data[last:-2], data[-2:]
    path.write_bytes(data[:-2] + scan * scans + end)
    return path


def tiff_bytes(entries: list[tuple[int, int, int, int]], body: bytes = b"",
               order: str = "<") -> bytes:
    """A classic TIFF: header, one IFD with ``entries`` (tag, type, count, inline value or
    offset) written in the given order (duplicates allowed), then ``body`` (at offset 8 +
    the IFD's size, see ``tiff_body_offset``)."""
    head = (b"II*\x00" if order == "<" else b"MM\x00*") + struct.pack(order + "I", 8)
    ifd = struct.pack(order + "H", len(entries))
    for tag, typ, count, value in entries:
        if typ == 3 and count == 1:
            ifd += struct.pack(order + "HHIHH", tag, typ, count, value, 0)
        else:
            ifd += struct.pack(order + "HHII", tag, typ, count, value)
    return head + ifd + struct.pack(order + "I", 0) + body


def tiff_body_offset(n_entries: int) -> int:
    return 8 + 2 + 12 * n_entries + 4


def write_tiff_repeated_size(path: Path, big: int = 16000) -> Path:
    """A 16x16 grey TIFF whose width and length tags come twice: first big x big, then
    16 x 16 (a header check keeping the last value reads 16x16)."""
    n = 10
    pixels = b"\x80" * 256
    entries = [(256, 4, 1, big), (257, 4, 1, big), (256, 3, 1, 16), (257, 3, 1, 16),
               (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, tiff_body_offset(n)), (278, 4, 1, 16), (279, 4, 1, len(pixels))]
    path.write_bytes(tiff_bytes(entries, pixels))
    return path


def write_tiff_huge_tile(path: Path, tile: int = 16000) -> Path:
    """A 16x16 grey TIFF stored as one tile x tile Deflate tile of zeros (~tile^2/1000
    bytes): a decoder allocates the whole tile."""
    comp = zlib.compressobj(9)
    row = b"\x00" * tile
    data = b"".join(comp.compress(row) for _ in range(tile)) + comp.flush()
    n = 10
    entries = [(256, 3, 1, 16), (257, 3, 1, 16), (258, 3, 1, 8), (259, 3, 1, 8),
               (262, 3, 1, 1), (277, 3, 1, 1), (322, 4, 1, tile), (323, 4, 1, tile),
               (324, 4, 1, tiff_body_offset(n)), (325, 4, 1, len(data))]
    path.write_bytes(tiff_bytes(entries, data))
    return path
