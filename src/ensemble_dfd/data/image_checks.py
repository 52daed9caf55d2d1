"""Structure checks of an image file before it is decoded: what a header check alone misses.

- JPEG: the scans are counted by walking the markers (entropy-coded data is skipped, not
  decoded). A progressive JPEG decodes every scan over the whole picture, so a 2 MB file
  with 40,000 tiny scans costs minutes; more than ``scan_limit`` scans (100, fewer above
  25 MP / 24 scans: a budget of scans x megapixels) is refused.
- TIFF: every IFD of the chain is parsed, every entry checked: known type, its values inside
  the file, no tag twice (a repeated width/height let a header check read 16x16 while the
  decoder used 16000x16000), each page's size under the pixel limit, tiles no larger than
  their page and under the limit, at most 4 samples of at most 64 bits, a compression from
  a short safe list, no SubIFDs. Anything else is refused (a known-safe subset).

Raises ``limits.LimitExceeded`` (over a limit) or ``ImageStructureError`` (malformed);
pure Python, reads the file only.
"""

from __future__ import annotations

import io
import mmap
import re
import struct
from pathlib import Path
from typing import BinaryIO

from ensemble_dfd.inference.limits import LimitExceeded, check_pixels, image_dimensions

MAX_JPEG_SCANS = 100  # libjpeg's progressive script: 10 scans
# each scan costs a pass over the picture (~80 ms per scan at 25 MP, shared 2-core machine):
# at most this many scans x megapixels, but never fewer than MIN_SCAN_LIMIT scans
SCAN_MEGAPIXEL_BUDGET = 600
MIN_SCAN_LIMIT = 12
MAX_JPEG_SEGMENTS = 5000
MAX_TIFF_PAGES = 16
MAX_TIFF_ENTRIES = 256
MAX_TIFF_SAMPLES = 4
# not JPEG-in-TIFF (7, and the old 6): each strip is a JPEG stream the scan check never sees
TIFF_COMPRESSIONS = {1: "none", 5: "LZW", 8: "Deflate", 32946: "Deflate", 32773: "PackBits"}
_TIFF_TYPE_SIZE = {1: 1, 2: 1, 3: 2, 4: 4, 5: 8, 6: 1, 7: 1, 8: 2, 9: 4, 10: 8, 11: 4, 12: 8}
_WIDTH, _LENGTH, _BITS, _COMPRESSION, _SAMPLES = 256, 257, 258, 259, 277
_TILE_W, _TILE_L, _SUB_IFDS = 322, 323, 330
_NEXT_MARKER = re.compile(rb"\xff+([^\x00\xd0-\xd7\xff])")  # skips stuffing and RSTn


class ImageStructureError(ValueError):
    """A file whose structure is malformed or outside the subset decoded safely."""


def check_image_structure(path: str | Path, max_pixels: int) -> None:
    """Check a JPEG's scan count or a TIFF's every IFD; other formats pass (their header
    check is enough). Raises LimitExceeded or ImageStructureError."""
    with Path(path).open("rb") as fh:
        head = fh.read(4)
        if head[:2] == b"\xff\xd8":
            fh.seek(0)
            dims = image_dimensions(fh)
            jpeg_scans(fh, scan_limit(dims[0] * dims[1] if dims else max_pixels))
        elif head in (b"II*\x00", b"MM\x00*"):
            check_tiff(fh, "<" if head[:2] == b"II" else ">", max_pixels)


# ---------------------------------------------------------------- JPEG


def scan_limit(pixels: int) -> int:
    """Scans allowed for a JPEG of ``pixels``: MAX_JPEG_SCANS, fewer for large pictures."""
    by_cost = int(SCAN_MEGAPIXEL_BUDGET / max(pixels / 1e6, 1e-9))
    return max(MIN_SCAN_LIMIT, min(MAX_JPEG_SCANS, by_cost))


def jpeg_scans(fh: BinaryIO, limit: int = MAX_JPEG_SCANS) -> int:
    """Number of scans (SOS markers) of a JPEG, walking its markers; LimitExceeded past
    ``limit``."""
    try:
        data = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (ValueError, OSError, io.UnsupportedOperation):  # empty file, or not a real file
        fh.seek(0)
        data = fh.read()
    pos, scans = 2, 0
    for _ in range(MAX_JPEG_SEGMENTS):
        # like libjpeg, skip any junk before a marker (it warns and goes on)
        m = _NEXT_MARKER.search(data, pos)
        if m is None:
            return scans  # cut file or trailing junk: the decoder judges it
        marker, pos = m.group(1)[0], m.end()
        if marker == 0xD9:  # end of image
            return scans
        if marker == 0x01:
            continue
        if pos + 2 > len(data):
            return scans
        length = struct.unpack(">H", data[pos:pos + 2])[0]
        pos += length
        if marker == 0xDA:  # start of scan: skip its entropy-coded data to the next marker
            scans += 1
            if scans > limit:
                raise LimitExceeded(f"JPEG has more than {limit} scans for its size (a "
                                    "progressive JPEG decodes the whole picture once per "
                                    "scan)")
            nxt = _NEXT_MARKER.search(data, pos)
            if nxt is None:
                return scans
            pos = nxt.start()
    raise ImageStructureError(f"JPEG has more than {MAX_JPEG_SEGMENTS} segments")


# ---------------------------------------------------------------- TIFF


def check_tiff(fh: BinaryIO, order: str, max_pixels: int) -> None:
    """Parse every IFD of a classic TIFF (see the module docstring)."""
    fh.seek(0, 2)
    size = fh.tell()
    fh.seek(4)
    offset = struct.unpack(order + "I", fh.read(4))[0]
    seen: set[int] = set()
    pages = 0
    while offset:
        if offset in seen or offset + 2 > size:
            raise ImageStructureError("TIFF directory chain loops or points outside the file")
        seen.add(offset)
        pages += 1
        if pages > MAX_TIFF_PAGES:
            raise ImageStructureError(f"TIFF has more than {MAX_TIFF_PAGES} pages")
        offset = _check_ifd(fh, order, offset, size, max_pixels)


def _check_ifd(fh: BinaryIO, order: str, offset: int, size: int, max_pixels: int) -> int:
    """Check one IFD; returns the offset of the next (0 = none)."""
    fh.seek(offset)
    n = struct.unpack(order + "H", fh.read(2))[0]
    if not 0 < n <= MAX_TIFF_ENTRIES:
        raise ImageStructureError(f"TIFF directory holds {n} entries")
    raw = fh.read(12 * n + 4)
    if len(raw) < 12 * n + 4:
        raise ImageStructureError("TIFF directory is cut short")
    tags: dict[int, list[int]] = {}
    for i in range(n):
        tag, typ, count, value = struct.unpack(order + "HHII", raw[12 * i:12 * i + 12])
        if tag in tags:
            raise ImageStructureError(f"TIFF tag {tag} appears twice in one directory")
        if typ not in _TIFF_TYPE_SIZE:
            raise ImageStructureError(f"TIFF tag {tag} has unknown type {typ}")
        nbytes = _TIFF_TYPE_SIZE[typ] * count
        if nbytes > 4 and value + nbytes > size:
            raise ImageStructureError(f"TIFF tag {tag}: its values lie outside the file")
        tags[tag] = _small_values(raw[12 * i + 8:12 * i + 12], order, typ, count) \
            if tag in (_WIDTH, _LENGTH, _BITS, _COMPRESSION, _SAMPLES, _TILE_W, _TILE_L) else []
    _check_page(tags, fh, order, raw, n, max_pixels)
    return struct.unpack(order + "I", raw[12 * n:12 * n + 4])[0]


def _small_values(field: bytes, order: str, typ: int, count: int) -> list[int]:
    """The values of a SHORT/LONG entry held inline (count 1 or 2 SHORTs); [] otherwise."""
    if typ == 3 and count <= 2:
        return list(struct.unpack(order + "HH", field))[:count]
    if typ == 4 and count == 1:
        return [struct.unpack(order + "I", field)[0]]
    return [-1] * count  # out-of-line or an odd type: judged as invalid where it matters


def _one(tags: dict[int, list[int]], tag: int, default: int | None = None) -> int:
    vals = tags.get(tag)
    if vals is None:
        if default is None:
            raise ImageStructureError(f"TIFF directory lacks tag {tag}")
        return default
    if len(vals) != 1 or vals[0] < 0:
        raise ImageStructureError(f"TIFF tag {tag} is not one SHORT or LONG")
    return vals[0]


def _check_page(tags: dict[int, list[int]], fh: BinaryIO, order: str, raw: bytes, n: int,
                max_pixels: int) -> None:
    width, height = _one(tags, _WIDTH), _one(tags, _LENGTH)
    check_pixels(width, height, max_pixels)
    if _SUB_IFDS in tags:
        raise ImageStructureError("TIFF with sub-images (SubIFDs) is not accepted")
    compression = _one(tags, _COMPRESSION, 1)
    if compression not in TIFF_COMPRESSIONS:
        raise ImageStructureError(f"TIFF compression {compression} is not accepted (only "
                                  f"{', '.join(sorted(set(TIFF_COMPRESSIONS.values())))})")
    samples = _one(tags, _SAMPLES, 1)
    if not 1 <= samples <= MAX_TIFF_SAMPLES:
        raise ImageStructureError(f"TIFF has {samples} samples per pixel")
    bits = tags.get(_BITS, [1])
    if any(b < 0 for b in bits) and len(bits) <= 4:  # more than 2 SHORTs: stored elsewhere
        bits = _read_shorts(fh, order, raw, n, _BITS, len(bits))
    if not all(1 <= b <= 64 for b in bits):
        raise ImageStructureError(f"TIFF bits per sample {bits} out of range")
    if _TILE_W in tags or _TILE_L in tags:
        tw, tl = _one(tags, _TILE_W), _one(tags, _TILE_L)
        if not (0 < tw <= _round16(width) and 0 < tl <= _round16(height)):
            raise LimitExceeded(f"TIFF tile of {tw}x{tl} px is larger than its "
                                f"{width}x{height} px page")
        check_pixels(tw, tl, max_pixels)


def _round16(v: int) -> int:
    return (v + 15) // 16 * 16


def _read_shorts(fh: BinaryIO, order: str, raw: bytes, n: int, tag: int, count: int
                 ) -> list[int]:
    for i in range(n):
        t, typ, c, value = struct.unpack(order + "HHII", raw[12 * i:12 * i + 12])
        if t == tag and typ == 3:
            fh.seek(value)
            return list(struct.unpack(order + "H" * c, fh.read(2 * c)))
    return [-1]
