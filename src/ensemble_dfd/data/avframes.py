"""Exact frames by index through PyAV, decoding only what the keyframe layout requires.

The video is demuxed once without decoding (packets only) to learn its true frame count and
where its keyframes are; ``decode_plan.plan_decoding`` turns the wanted indices into runs
(seek to a keyframe, decode forward); each run decodes with the codec's own threads. Frame
``i`` is the i-th frame in presentation order, the frame OpenCV's grab-walk calls ``i``, and
its BGR pixels are the same (tests/test_avframes.py). Every decoded frame counts against the
budget and is checked against the pixel limit: FFmpeg's decoder is given the limit
(``max_pixels``) and refuses a larger frame before allocating it (a container declaring
640x368 whose MJPEG frames are 16000x16000 is refused, naming the size read from the
packet, at the first such frame, without the ~400 MB decode); other codecs' refusals end
the video as a decode failure. The deadline is checked after each decoded frame. The file
is closed when the generator ends, on every path (``closing`` in the callers).
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ensemble_dfd.data.decode_plan import DecodePlan, plan_decoding
from ensemble_dfd.data.frames import FrameReport, VideoReadError, cap_width
from ensemble_dfd.inference.limits import (
    Deadline,
    LimitExceeded,
    check_pixels,
    image_dimensions,
)

_INT_MAX = 2**31 - 1  # FFmpeg's max_pixels option is an int
_threads = 0  # this process's threads per video (set_threads); 0: FFmpeg's count, every core


def set_threads(n: int) -> None:
    """The threads each video's decoding and colour conversion may use in this process
    (0: FFmpeg's own count, which is cores + 1, and every core). prepare's workers decode
    side by side and each takes its share (``share_of_cores``): two workers on 2 cores with
    one thread each made ``prepare faces`` ~8% quicker than with FFmpeg's three each, the
    same files (results/benchmarks). The pixels do not depend on it."""
    global _threads
    _threads = max(0, int(n))


def share_of_cores(processes: int) -> int:
    """Threads per process when `processes` decode side by side on this machine (>= 1)."""
    return max(1, (os.cpu_count() or 1) // max(1, processes))


def to_bgr(frame) -> np.ndarray:
    """A decoded frame's BGR pixels (swscale's conversion, as OpenCV's reader does), on
    every core or this process's share (PyAV >= 17 splits swscale's work; the same pixels;
    a 1080p frame 4.1-4.8 instead of 5.3-5.4 ms on 2 cores, while decoding dominates:
    benchmarks/decode_options.py)."""
    return frame.to_ndarray(format="bgr24", threads=_threads or os.cpu_count() or 1)


def have_pyav() -> bool:
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(frozen=True)
class Layout:
    """A video's frames in presentation order: their pts, and which are keyframes."""

    pts: tuple[int, ...]
    keyframes: tuple[int, ...]  # frame indices
    fps: float


class NoLayout(Exception):
    """The container gives no usable timestamps: read it another way (OpenCV)."""


def read_layout(container, stream, deadline: Deadline, max_packets: int) -> Layout:
    """Demux (no decoding) at most ``max_packets`` packets of ``stream``."""
    pts, keys, n = [], [], 0
    for packet in container.demux(stream):
        if packet.size == 0:
            continue
        if packet.pts is None:
            raise NoLayout("a packet without a timestamp")
        n += 1
        pts.append(int(packet.pts))
        if packet.is_keyframe:
            keys.append(int(packet.pts))
        if n % 256 == 0:
            deadline.check()
        if n >= max_packets:
            raise LimitExceeded(f"has more than {max_packets} video packets")
    order = sorted(set(pts))
    if len(order) != len(pts):
        raise NoLayout("repeated timestamps")
    rank = {p: i for i, p in enumerate(order)}
    fps = float(stream.average_rate or 0) or 0.0
    return Layout(tuple(order), tuple(sorted(rank[k] for k in set(keys))), fps)


def _open(path: Path):
    import av

    if not path.is_file():
        raise VideoReadError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise VideoReadError(f"{path}: empty file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, ValueError, OSError):
        raise VideoReadError(f"{path}: cannot open as a video (corrupt or not a video)"
                             ) from None
    if not container.streams.video:
        container.close()
        raise VideoReadError(f"{path}: has no video stream")
    return container


def iter_planned(path: str | Path, wanted_for, max_width: int, report: FrameReport,
                 max_pixels: int, budget: int = 0, deadline: Deadline | None = None,
                 max_packets: int = 1 << 24) -> Iterator[tuple[int, np.ndarray]]:
    """(index, BGR frame capped at ``max_width``) of the frames ``wanted_for(n_frames,
    fps)`` names, decoded per ``plan_decoding`` within ``budget`` decoded frames (0 = none).

    Over the budget the frames are moved toward the keyframes (``report.error`` does not
    say so; ``report.plan`` does). Raises VideoReadError naming the file, LimitExceeded for
    pixels, time or packets, NoLayout before any frame when timestamps are unusable.
    """
    import av

    path = Path(path)
    deadline = deadline or Deadline(0.0)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        w, h = stream.codec_context.width, stream.codec_context.height
        if w and h:
            check_pixels(w, h, max_pixels)
        try:
            layout = read_layout(container, stream, deadline, max_packets)
        except av.FFmpegError as exc:
            raise VideoReadError(f"{path}: cannot be demuxed ({type(exc).__name__})") from None
        report.fps = layout.fps
        report.frames_read = len(layout.pts)  # frames the container holds (demuxed)
        report.frame_count = report.frame_count or int(stream.frames or 0)
        plan = plan_decoding(list(layout.keyframes), wanted_for(len(layout.pts), layout.fps),
                             budget)
        report.plan = plan
        stream.thread_type = "AUTO"
        if _threads:
            stream.codec_context.thread_count = _threads
        stream.codec_context.options = {"max_pixels": str(min(max_pixels, _INT_MAX))}
        yield from _run_plan(container, stream, layout, plan, max_width, report, max_pixels,
                             deadline, path)
    finally:
        container.close()


def _decode(cc, packet, max_pixels: int) -> list:
    """The frames of one packet. The decoder refuses a frame over its ``max_pixels`` option
    with an FFmpeg error; where the packet is a JPEG (MJPEG) its header names the size and
    the refusal becomes LimitExceeded."""
    import av

    try:
        return cc.decode(packet)
    except av.FFmpegError:
        dims = image_dimensions(io.BytesIO(bytes(packet))) if packet.size else None
        if dims:
            check_pixels(*dims, max_pixels)
        raise


def _run_plan(container, stream, layout: Layout, plan: DecodePlan, max_width: int,
              report: FrameReport, max_pixels: int, deadline: Deadline, path: Path
              ) -> Iterator[tuple[int, np.ndarray]]:
    """Each run: seek to its keyframe, send packets until its last wanted frame comes out.
    Packets of unwanted frames go in with ``skip_frame = NONREF``: a frame no other frame
    refers to is then not decoded at all (about half of an H.264 stream with B-frames)."""
    import av

    index_of = {p: i for i, p in enumerate(layout.pts)}
    cc = stream.codec_context
    # packets: a seek that lands far too early stops here (each run may also send a few
    # packets past its last frame while the decoder's threads drain)
    hard_cap = 2 * plan.decoded + 32 * len(plan.runs)
    sent = 0
    try:
        for start, wanted in plan.runs:
            want = {layout.pts[i] for i in wanted}
            last = layout.pts[wanted[-1]]
            container.seek(layout.pts[start], stream=stream, backward=True, any_frame=False)
            done = False
            for packet in container.demux(stream):
                if packet.size:
                    sent += 1
                    if sent > hard_cap:
                        raise LimitExceeded(f"needed more than {hard_cap} packets for a plan "
                                            f"of {plan.decoded} frames (inconsistent index)")
                    cc.skip_frame = "DEFAULT" if packet.pts in want else "NONREF"
                for frame in _decode(cc, packet, max_pixels):
                    report.frames_decoded += 1
                    check_pixels(frame.width, frame.height, max_pixels)
                    deadline.check()
                    if frame.pts in want:
                        idx = index_of[frame.pts]
                        report.frames_kept += 1
                        report.kept.append(idx)
                        yield idx, cap_width(to_bgr(frame), max_width)
                    done = done or (frame.pts is not None and frame.pts >= last)
                if done:
                    break
    except av.FFmpegError as exc:
        report.error = f"frame decoding failed ({type(exc).__name__})"
    finally:
        cc.skip_frame = "DEFAULT"
    if report.frames_kept == 0:
        raise VideoReadError(f"{path}: no frame could be decoded (corrupt or not a video)")
