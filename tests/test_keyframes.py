"""Keyframe-only video reading for verdicts (predict/serve --keyframes): only keyframes are
decoded, at most max_frames of them spread over the video, pixel-identical to OpenCV's frame
at the same index, within the limits, and wired through extract_faces."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile_media import write_frame_bomb

from ensemble_dfd.config import PrepareConfig
from ensemble_dfd.data.frames import FrameReport, VideoReadError
from ensemble_dfd.inference.limits import Deadline, LimitExceeded, Limits
from ensemble_dfd.inference.verdict import extract_faces

av = pytest.importorskip("av", reason="PyAV (the 'infer' extra) is not installed")
from ensemble_dfd.data.keyframes import iter_keyframes  # noqa: E402


def write_video(path: Path, n_frames: int = 120, size: int = 64) -> Path:
    """An mp4 whose frame i shows the number i as a grey level pattern (frames differ)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25.0, (size, size))
    assert writer.isOpened()
    for i in range(n_frames):
        frame = np.full((size, size, 3), (i * 2) % 256, np.uint8)
        frame[: size // 2, :, 1] = (255 - i) % 256
        writer.write(frame)
    writer.release()
    return path


def keyframe_indices(path: Path) -> list[int]:
    """What the container marks as keyframes, by a full decode (the reference)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        rate, base = float(s.average_rate), float(s.time_base)
        return sorted(round(f.pts * base * rate) for f in c.decode(s) if f.key_frame)


def read(path: Path, limits: Limits) -> tuple[list[int], list[np.ndarray], FrameReport]:
    report = FrameReport(str(path))
    pairs = list(iter_keyframes(path, 10_000, report, limits, Deadline(limits.seconds)))
    return [i for i, _ in pairs], [f for _, f in pairs], report


def test_keyframes_are_the_containers_spread_and_pixel_exact(tmp_path):
    video = write_video(tmp_path / "v.mp4")
    keys = keyframe_indices(video)
    assert len(keys) >= 3, keys  # the writer's GOP gives several keyframes in 120 frames
    got, frames, report = read(video, Limits(max_frames=3))
    assert len(got) == 3 and set(got) <= set(keys)
    assert got[0] == keys[0] and got[-1] == keys[-1]  # spread from the first to the last
    assert report.frames_kept == 3 and report.kept == got
    cap = cv2.VideoCapture(str(video))
    for index, frame in zip(got, frames, strict=True):
        cap.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, ref = cap.read()
        assert ok and np.array_equal(frame, ref), index
    all_keys, _, _ = read(video, Limits(max_frames=1000))
    assert all_keys == keys


def test_frame_count_bomb_decodes_at_most_max_frames(tmp_path):
    bomb = write_frame_bomb(tmp_path / "bomb.mp4", n_frames=6_000)
    got, _, report = read(bomb, Limits(max_frames=4))
    assert 1 <= len(got) <= 4 and report.frames_kept == len(got)


def test_pixels_checked_from_the_header_and_bad_files_named(tmp_path):
    video = write_video(tmp_path / "v.mp4", n_frames=30)
    with pytest.raises(LimitExceeded, match="megapixels"):
        read(video, Limits(max_pixels=100))
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(VideoReadError, match="junk.mp4") as info:
        read(junk, Limits())
    # issue 26 (8): FFmpeg's reason in words, without its errno number or a second path
    assert str(info.value) == (f"{junk}: cannot be read as a video (Invalid data found "
                               "when processing input)")
    with pytest.raises(VideoReadError, match="missing.mp4"):
        read(tmp_path / "missing.mp4", Limits())


def test_extract_faces_uses_keyframes_when_asked(tmp_path):
    video = write_video(tmp_path / "v.mp4")
    p = PrepareConfig(every=10)
    walked = extract_faces(video, "video", p, mode="as-is", limits=Limits())
    keyed = extract_faces(video, "video", p, mode="as-is", limits=Limits(keyframes=True,
                                                                          max_frames=3))
    assert walked.frames_kept == 12  # the run's frame step: 0, 10, ..., 110
    assert keyed.frames_kept == 3
    assert sorted(f.frame for f in keyed.faces) == read(video, Limits(max_frames=3))[0]
