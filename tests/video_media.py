"""Videos written with PyAV for the frame-reader tests: H.264 with B-frames and a chosen
keyframe spacing (one keyframe in a long video is the decode-cost bomb), and an MJPEG file
whose container declares a small frame size while its frames are larger."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np


def frame_pattern(i: int, w: int, h: int) -> np.ndarray:
    """Frame i: differs from its neighbours (a moving bar on a grey level)."""
    img = np.full((h, w, 3), (3 * i) % 256, np.uint8)
    x = (2 * i) % w
    img[:, x: x + 4, :] = 255 - img[:, x: x + 4, :]
    img[: h // 3, :, 1] = (7 * i) % 256
    return img


def write_h264(path: Path, n_frames: int, size: tuple[int, int] = (64, 48),
               keyint: int = 30, bframes: int = 2, fps: int = 25) -> Path:
    """libx264, yuv420p, a keyframe every ``keyint`` frames (no scene-cut keyframes)."""
    import av

    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"x264-params": f"keyint={keyint}:min-keyint={keyint}:scenecut=0:"
                                    f"bframes={bframes}", "preset": "ultrafast"
                     if bframes == 0 else "veryfast"}
        for i in range(n_frames):
            frame = av.VideoFrame.from_ndarray(frame_pattern(i, w, h), format="bgr24")
            for packet in s.encode(frame):
                out.mux(packet)
        for packet in s.encode():
            out.mux(packet)
    return path


def write_lying_size(path: Path, declared: tuple[int, int] = (64, 48),
                     real: tuple[int, int] = (640, 480), n_frames: int = 5,
                     big_every: int = 1) -> Path:
    """An MJPEG .avi whose header and first frame say ``declared`` while every later frame
    whose index is a multiple of ``big_every`` is a JPEG of ``real`` pixels (a prober that
    decodes the first frame sees ``declared``); the other frames are ``declared``."""
    import av

    with av.open(str(path), "w", format="avi") as out:
        s = out.add_stream("mjpeg", rate=25)
        s.width, s.height, s.pix_fmt = declared[0], declared[1], "yuvj420p"
        for i in range(n_frames):
            ok, jpg = cv2.imencode(".jpg", frame_pattern(
                i, *(real if i and i % big_every == 0 else declared)))
            assert ok
            packet = av.Packet(jpg.tobytes())
            packet.stream = s
            packet.pts = packet.dts = i
            packet.time_base = Fraction(1, 25)
            packet.is_keyframe = True
            out.mux(packet)
    return path
