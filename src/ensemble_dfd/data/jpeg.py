"""The one JPEG encoder: every crop, thumbnail and degradation goes through it, so the
bytes `prepare` stores and the bytes `predict` re-creates come from the same call."""

from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB (or grey) uint8 image at `quality` (1-100, IJG scale)."""
    img = rgb if rgb.ndim == 2 else cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError(f"JPEG encoding failed for a {rgb.dtype} {rgb.shape} image")
    return buf.tobytes()


def decode_jpeg(data: bytes, grey: bool = False) -> np.ndarray:
    """RGB (or, with grey, single-channel) uint8 image from JPEG bytes."""
    flag = cv2.IMREAD_UNCHANGED if grey else cv2.IMREAD_COLOR
    out = cv2.imdecode(np.frombuffer(data, np.uint8), flag)
    return out if out.ndim == 2 else cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def jpeg_roundtrip(rgb: np.ndarray, quality: int) -> tuple[np.ndarray, bytes]:
    """The image after JPEG compression at `quality`, and its bytes."""
    data = encode_jpeg(rgb, quality)
    return decode_jpeg(data, grey=rgb.ndim == 2), data
