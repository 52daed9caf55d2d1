"""Verdict frames from keyframes only: decode a few keyframes instead of walking the video.

Reaching frame k of an H.264/H.265 video means decoding every frame since the keyframe
before it, so the exact frame step (``iter_frames_bounded``) decodes nearly the whole video:
1–3 s for a 10-s 1080p clip on 2 cores. Keyframes decode on their own. Here the video is
demuxed without decoding to find its keyframes (packets, no pixels), at most
``limits.max_frames`` of them spread over the video are chosen, and only those are decoded,
each after a seek. The frames differ from the ones the run's faces were cut from (keyframes
sit where the encoder put them, e.g. every 250 frames), so this is an opt-in speed setting
for verdicts (``predict --keyframes``, ``serve --keyframes``), never for datasets.
PyAV (``pip install av``, in the ``infer`` extra) is imported only here.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ensemble_dfd.data.avframes import to_bgr
from ensemble_dfd.data.frames import FrameReport, VideoReadError, cap_width
from ensemble_dfd.errors import UsageError
from ensemble_dfd.inference.limits import Deadline, Limits, check_pixels


def _av():
    try:
        import av
    except ImportError:
        raise UsageError("keyframe reading needs PyAV: pip install av (or the 'infer' "
                         "extra)") from None
    return av


def keyframe_times(container, stream, deadline: Deadline, max_packets: int) -> list[int]:
    """Presentation timestamps of the video's keyframe packets, in order (no decoding);
    at most ``max_packets`` packets are looked at."""
    keys, n = [], 0
    for packet in container.demux(stream):
        if packet.size == 0:  # the flush packet at the end
            continue
        n += 1
        if packet.is_keyframe and packet.pts is not None:
            keys.append(int(packet.pts))
        if n % 256 == 0:
            deadline.check()
        if n >= max_packets:
            break
    return sorted(set(keys))


def spread(items: list[int], k: int) -> list[int]:
    """At most k items, evenly spread from the first to the last."""
    if len(items) <= k:
        return list(items)
    pick = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(np.int64))
    return [items[int(i)] for i in pick]


def ffmpeg_reason(exc: Exception) -> str:
    """FFmpeg's reason in words, without its errno number or the file path it repeats."""
    reason = getattr(exc, "strerror", None) or ""
    return reason.strip().rstrip(".") or "corrupt or unsupported video"


def iter_keyframes(path: str | Path, max_width: int, report: FrameReport, limits: Limits,
                   deadline: Deadline) -> Iterator[tuple[int, np.ndarray]]:
    """(frame index, BGR frame) of at most ``limits.max_frames`` keyframes spread over the
    video, within ``limits`` (pixels from the stream header before any decoding, time
    between packets and frames). Raises VideoReadError naming the file."""
    av = _av()
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        raise VideoReadError(f"{path}: no such file or an empty file")
    try:
        container = av.open(str(path))
    except (av.FFmpegError, ValueError) as exc:
        raise VideoReadError(f"{path}: cannot be read as a video ({ffmpeg_reason(exc)})"
                             ) from None
    with container:
        if not container.streams.video:
            raise VideoReadError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        check_pixels(stream.codec_context.width, stream.codec_context.height,
                     limits.max_pixels)
        rate = float(stream.average_rate or 0) or 0.0
        report.fps, report.frame_count = rate, int(stream.frames or 0)
        base = float(stream.time_base or 0)
        try:
            keys = keyframe_times(container, stream, deadline, limits.sequential_frames * 40)
            stream.codec_context.skip_frame = "NONKEY"
            for pts in spread(keys, limits.max_frames):
                deadline.check()
                container.seek(pts, stream=stream, backward=True, any_frame=False)
                frame = next(container.decode(stream), None)
                if frame is None:
                    continue
                check_pixels(frame.width, frame.height, limits.max_pixels)
                index = round(frame.pts * base * rate) if frame.pts is not None else 0
                report.frames_kept += 1
                report.kept.append(index)
                yield index, cap_width(to_bgr(frame), max_width)
        except av.FFmpegError as exc:
            raise VideoReadError(f"{path}: {ffmpeg_reason(exc)}") from None
        report.frames_read = len(keys)
    if report.frames_kept == 0:
        raise VideoReadError(f"{path}: no keyframe could be decoded (corrupt or not a video)")
