"""Per-image properties for the blur/size questions: pure numpy/OpenCV, no model needed.

blur = variance of the Laplacian of the grayscale image (higher = sharper); JPEG quality =
the IJG quality (1-100) whose scaled standard luminance table is closest to the file's own
quantisation table (NaN when the file is not a JPEG or has no DQT).
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ensemble_dfd.data.images import ImageReadError, read_rgb

# ITU-T T.81 Annex K.1 luminance and K.2 chrominance tables, natural (row-major) order.
STD_LUMINANCE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99], dtype=np.int64)
STD_CHROMINANCE = np.array([
    17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99,
    24, 26, 56, 99, 99, 99, 99, 99, 47, 66, 99, 99, 99, 99, 99, 99] + [99] * 32, dtype=np.int64)
# DQT stores coefficients in zig-zag order: ZIGZAG[k] = natural index of the k-th entry.
ZIGZAG = np.array([
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5,
    12, 19, 26, 33, 40, 48, 41, 34, 27, 20, 13, 6, 7, 14, 21, 28,
    35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
    58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63], dtype=np.int64)

PROPERTY_COLUMNS = ("width", "height", "area", "blur", "jpeg_quality", "brightness", "contrast")


def ijg_table(quality: int, base: np.ndarray = STD_LUMINANCE) -> np.ndarray:
    """libjpeg's jpeg_quality_scaling + jpeg_add_quant_table (baseline: clamp to 1..255)."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


_IJG_LUMA = np.stack([ijg_table(q) for q in range(1, 101)])  # (100, 64), row q-1


def parse_dqt(data: bytes) -> dict[int, np.ndarray]:
    """Quantisation tables of a JPEG byte string, {table id: 64 values in natural order}.

    Empty when the data is not a JPEG or carries no DQT before the first scan.
    """
    tables: dict[int, np.ndarray] = {}
    if len(data) < 4 or data[:2] != b"\xff\xd8":
        return tables
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            break
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:  # markers without a length
            pos += 2
            continue
        if marker in (0xDA, 0xD9):  # start of scan / end of image: tables come before
            break
        length = int.from_bytes(data[pos + 2:pos + 4], "big")
        segment = data[pos + 4:pos + 2 + length]
        if marker == 0xDB:
            i = 0
            while i < len(segment):
                precision, table_id = segment[i] >> 4, segment[i] & 0x0F
                size = 128 if precision else 64
                raw = segment[i + 1:i + 1 + size]
                if len(raw) < size:
                    break
                dtype = ">u2" if precision else "u1"
                zz = np.frombuffer(raw, dtype=dtype).astype(np.int64)
                natural = np.empty(64, dtype=np.int64)
                natural[ZIGZAG] = zz
                tables[table_id] = natural
                i += 1 + size
        pos += 2 + length
    return tables


def estimate_jpeg_quality(tables: dict[int, np.ndarray]) -> float:
    """IJG quality (1-100) closest to the luminance table (id 0); NaN without one.

    Exact for files written by libjpeg/Pillow/OpenCV; for other encoders it is the nearest
    IJG equivalent.
    """
    luma = tables.get(0)
    if luma is None:
        return math.nan
    err = np.abs(_IJG_LUMA - luma[None, :]).sum(axis=1)
    best = np.flatnonzero(err == err.min())
    return float(best[-1] + 1)  # ties (tables saturated at 1): the highest quality


def jpeg_quality(path: str | Path | None = None, data: bytes | None = None) -> float:
    """Estimated JPEG quality of a file (or its bytes); NaN if it is not a JPEG."""
    if data is None:
        if path is None:
            return math.nan
        with open(path, "rb") as fh:
            data = fh.read(1 << 16)  # DQT sits in the header; 64 KiB covers EXIF blocks too
    return estimate_jpeg_quality(parse_dqt(data))


def to_gray(img: np.ndarray) -> np.ndarray:
    if img.ndim == 2:
        return img
    if img.shape[2] == 4:
        img = img[..., :3]
    return cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY)


def blur_score(img: np.ndarray) -> float:
    """Variance of the Laplacian of the grayscale image; lower means blurrier."""
    return float(cv2.Laplacian(to_gray(img), cv2.CV_64F).var())


def image_properties(rgb: np.ndarray, path: str | Path | None = None) -> dict[str, float]:
    """width, height, area, blur, jpeg_quality (NaN unless ``path`` is a JPEG),
    brightness (mean gray, 0-255) and contrast (std of gray) of an RGB uint8 image."""
    h, w = rgb.shape[:2]
    gray = to_gray(rgb)
    return {
        "width": int(w),
        "height": int(h),
        "area": int(w * h),
        "blur": float(cv2.Laplacian(gray, cv2.CV_64F).var()),
        "jpeg_quality": jpeg_quality(path) if path is not None else math.nan,
        "brightness": float(gray.mean()),
        "contrast": float(gray.std()),
    }


def properties_table(paths: Sequence[str | Path], workers: int = 0) -> pd.DataFrame:
    """image_properties for many files, one row each in input order: ``path`` plus the
    property columns and ``error`` ('' or why the file could not be read; properties NaN)."""
    def one(p: str | Path) -> dict[str, object]:
        try:
            row: dict[str, object] = dict(image_properties(read_rgb(p), path=p))
            row["error"] = ""
        except (ImageReadError, OSError) as exc:
            row = {c: math.nan for c in PROPERTY_COLUMNS}
            row["error"] = str(exc)
        row["path"] = str(p)
        return row

    # OpenCV releases the GIL while decoding and filtering, so threads scale.
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        rows = list(pool.map(one, paths))
    return pd.DataFrame(rows, columns=["path", *PROPERTY_COLUMNS, "error"])
