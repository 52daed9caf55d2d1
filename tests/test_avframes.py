"""The planned PyAV reader against today's OpenCV reader (pixel-identical frames), and its
bounds on hostile videos: a keyframe-less long video costs at most the decoded-frame
budget, a container lying about its frame size is refused at the first large frame, the
deadline is checked inside the decode loop, and the file is closed on every path."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
import pytest
from video_media import write_h264, write_lying_size

from ensemble_dfd.config import PrepareConfig
from ensemble_dfd.data import avframes
from ensemble_dfd.data import frames as framelib
from ensemble_dfd.inference.limits import Deadline, LimitExceeded, Limits
from ensemble_dfd.inference.verdict import LimitError, extract_faces

pytest.importorskip("av", reason="PyAV (the 'infer' extra) is not installed")


def read(path: Path, use_av: bool, monkeypatch, fn, *args, **kw) -> list:
    monkeypatch.setattr(avframes, "have_pyav", lambda: use_av)
    return list(fn(path, *args, **kw))


def same(a: list, b: list) -> bool:
    return ([i for i, _ in a] == [i for i, _ in b]
            and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b, strict=False)))


@pytest.fixture(scope="module")
def bframes(tmp_path_factory) -> Path:
    """H.264 with B-frames, a keyframe every 40 frames, 150 frames."""
    return write_h264(tmp_path_factory.mktemp("v") / "b.mp4", 150, keyint=40)


@pytest.mark.parametrize("threads", [0, 1])
@pytest.mark.parametrize("every", [1, 7, 30, 120])
def test_sequential_and_planned_readers_give_identical_frames(bframes, monkeypatch, every,
                                                              threads):
    """Whatever the decoder's threads: FFmpeg's count (0) or prepare's one per worker."""
    monkeypatch.setattr(avframes, "_threads", threads)
    new = read(bframes, True, monkeypatch, framelib.iter_frames, every, max_width=0)
    old = read(bframes, False, monkeypatch, framelib.iter_frames, every, max_width=0)
    assert [i for i, _ in new] == list(range(0, 150, every))
    assert same(new, old)


@pytest.mark.parametrize("n", [3, 32, 200])
def test_spread_frames_identical_and_decoding_skipped(bframes, monkeypatch, n):
    report = framelib.FrameReport(str(bframes))
    new = read(bframes, True, monkeypatch, framelib.iter_frames_spread, n, 0, report)
    old = read(bframes, False, monkeypatch, framelib.iter_frames_spread, n, 0)
    assert same(new, old)
    assert report.frames_read == 150 and report.frames_kept == len(new)
    if n == 3:  # frames 0, 75, 149: the segments before 40 and 120 are not decoded whole
        assert report.frames_decoded < 150


@pytest.mark.integration
@pytest.mark.parametrize(("name", "kept"), [("004.mp4", 11), ("brtujopkby.mp4", 10)])
def test_readers_identical_on_a_shared_video(wild, monkeypatch, name, kept):
    """FF++ 1280x720 and DFDC 1080x1920 (portrait): the planned reader, its colour
    conversion threaded, gives OpenCV's pixels."""
    video = wild / name
    new = read(video, True, monkeypatch, framelib.iter_frames, 30)
    old = read(video, False, monkeypatch, framelib.iter_frames, 30)
    assert len(new) == kept and same(new, old)


def test_share_of_cores(monkeypatch):
    monkeypatch.setattr(os, "cpu_count", lambda: 16)
    assert [avframes.share_of_cores(n) for n in (0, 1, 4, 16, 32)] == [16, 16, 4, 1, 1]
    monkeypatch.setattr(os, "cpu_count", lambda: None)
    assert avframes.share_of_cores(2) == 1


def test_prepare_workers_take_their_share_of_the_decoder_threads(tmp_path, monkeypatch):
    """run_tasks hands each worker cores // workers decoder threads (one process here)."""
    from ensemble_dfd.prepare import extract
    from ensemble_dfd.prepare.plan import VideoTask

    seen: list[int] = []
    monkeypatch.setattr(extract, "process", lambda t, out, s: seen.append(s.decode_threads))
    monkeypatch.setattr(os, "cpu_count", lambda: 8)
    tasks = [VideoTask(video="v", path="", label=0, source="s", group="g")]
    extract.run_tasks(tasks, tmp_path, extract.Settings(), 0, lambda r: None, "faces")
    assert seen == [8]


@pytest.fixture(scope="module")
def keyframeless(tmp_path_factory) -> Path:
    """6,000 frames and a single keyframe: reaching the last frame decodes all 6,000."""
    return write_h264(tmp_path_factory.mktemp("v") / "one_key.mp4", 6000, keyint=100_000,
                      bframes=0)


def test_keyframeless_video_costs_at_most_the_budget(keyframeless):
    limits = Limits(max_frames=32, max_decoded_frames=300, seconds=20)
    report = framelib.FrameReport(str(keyframeless))
    got = list(framelib.iter_frames_bounded(keyframeless, 1, 0.0, 640, report, limits))
    assert report.frames_decoded <= 300
    assert 1 < len(got) <= 32 and got[-1][0] < 300  # moved toward the only keyframe
    assert report.plan is not None and not report.plan.exact


class CountingDeadline(Deadline):
    """Runs out after ``n`` checks."""

    def __init__(self, n: int):
        super().__init__(0.0)
        self.n = n

    def check(self) -> None:
        self.n -= 1
        if self.n < 0:
            raise LimitExceeded("out of time (test)", "time")


def test_deadline_is_checked_inside_the_decode_loop(keyframeless):
    """One wanted frame 5,000 frames past the keyframe: the deadline stops the decoding."""
    limits = Limits(max_frames=2, max_decoded_frames=10_000, seconds=0)
    report = framelib.FrameReport(str(keyframeless))
    with pytest.raises(LimitExceeded, match="out of time"):
        list(framelib.iter_frames_bounded(keyframeless, 5000, 0.0, 640, report, limits,
                                          CountingDeadline(100)))
    assert report.frames_decoded <= 101


def open_fds(path: Path) -> int:
    target = str(path.resolve())
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            n += os.readlink(f"/proc/self/fd/{fd}") == target
    return n


def test_container_lying_about_its_size_is_refused(tmp_path):
    """Header and first frame 64x48, then 4000x3000 frames: OpenCV hands them back scaled to
    64x48 (a 'no face' answer after a 12 MP decode); the planned reader refuses them."""
    video = write_lying_size(tmp_path / "lie.avi", real=(4000, 3000))
    limits = Limits(max_pixels=1_000_000)
    with pytest.raises(LimitError, match=r"lie.avi: 4000x3000 px is over the limit"):
        extract_faces(video, "video", PrepareConfig(every=1), limits=limits)
    assert open_fds(video) == 0


# VmHWM: this process's peak RSS in kB (ru_maxrss would start at the parent's peak)
_CHILD = """
import sys
from ensemble_dfd.data import avframes, frames
from ensemble_dfd.inference.limits import LimitExceeded
def peak():
    status = open("/proc/self/status").read()
    return int(status.split("VmHWM:")[1].split()[0])
before = peak()
try:
    list(avframes.iter_planned(sys.argv[1], lambda n, fps: list(range(n)), 640,
                               frames.FrameReport(sys.argv[1]), 25_000_000))
except LimitExceeded as exc:
    print(exc)
print((peak() - before) // 1024)
"""


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="needs /proc")
def test_oversize_frame_refused_before_it_is_decoded(tmp_path):
    """Issue 26 (3): a 64x48 container whose second frame is 8000x8000 (64 MP) is refused
    naming that size, and the decoder never allocates the frame (~100 MB as YUV, ~200 MB as
    BGR): the process's peak grows by well under the frame's size."""
    import subprocess
    import sys

    video = write_lying_size(tmp_path / "lie.avi", real=(8000, 8000), n_frames=3)
    out = subprocess.run([sys.executable, "-c", _CHILD, str(video)], capture_output=True,
                         text=True, timeout=120, check=True).stdout.splitlines()
    assert out[0] == "8000x8000 px is over the limit of 25 megapixels", out
    assert int(out[1]) < 40, f"peak grew by {out[1]} MB"


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc")
def test_file_released_when_the_request_fails_midway(tmp_path, monkeypatch):
    """A failure in the face step (not the reader) still closes the video at once, even
    while the error is held (a server logs it; its context references the reader)."""
    video = write_h264(tmp_path / "v.mp4", 60, keyint=20)
    from ensemble_dfd.data import faces as facelib

    def boom(*a, **k):
        raise RuntimeError("detector failed")

    monkeypatch.setattr(facelib, "iter_kept_faces", boom)
    import gc

    gc.disable()
    try:
        with pytest.raises(Exception, match="v.mp4") as held:
            extract_faces(video, "video", PrepareConfig(every=10))
        assert held.value.__context__ is not None
        assert open_fds(video) == 0
    finally:
        gc.enable()


def test_verdict_says_when_frames_were_moved(keyframeless):
    res = extract_faces(keyframeless, "video", PrepareConfig(every=1), "as-is",
                        limits=Limits(max_frames=8, max_decoded_frames=100))
    assert res.frames_kept >= 2 and "over the budget of 100" in res.warnings[0]


def test_predict_flag_sets_the_budget(tmp_path, capsys):
    from ensemble_dfd.predict import main as predict_main

    code = predict_main([str(tmp_path / "v.mp4"), "--run", str(tmp_path),
                         "--max-decoded-frames", "0"])
    assert code == 2 and "max_decoded_frames must be >= 1" in capsys.readouterr().err
