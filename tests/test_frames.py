"""Frame selection (pure) and frame reading (synthetic videos)."""

from __future__ import annotations

import pytest
from synthetic_media import make_video, truncate

from ensemble_dfd.data import frames


@pytest.mark.parametrize(("n", "every", "expected"), [
    (300, 120, [0, 120, 240]),
    (241, 120, [0, 120, 240]),
    (240, 120, [0, 120]),
    (5, 1, [0, 1, 2, 3, 4]),
    (50, 120, [0]),
    (0, 120, []),
])
def test_every_n_frames(n: int, every: int, expected: list[int]) -> None:
    assert frames.kept_indices(n, every=every) == expected


def test_every_seconds_uses_fps_and_rounds() -> None:
    assert frames.kept_indices(100, every_seconds=1.0, fps=30.0) == [0, 30, 60, 90]
    assert frames.kept_indices(100, every_seconds=1.0, fps=29.97) == [0, 30, 60, 90]
    assert frames.kept_indices(10, every_seconds=0.5, fps=5.0) == [0, 3, 5, 8]
    # shorter than a frame: every frame once, no duplicates
    assert frames.kept_indices(4, every_seconds=0.01, fps=25.0) == [0, 1, 2, 3]
    # seconds win over every
    assert frames.kept_indices(100, every=7, every_seconds=2.0, fps=25.0) == [0, 50]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"every": 0}, "every must be >= 1"),
    ({"every_seconds": 1.0, "fps": 0.0}, "fps"),
])
def test_bad_selection_arguments(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        frames.kept_indices(10, **kwargs)


@pytest.mark.parametrize(("w", "h", "cap", "expected"), [
    (1280, 720, 640, (640, 360)),
    (1920, 1080, 640, (640, 360)),
    (1080, 1920, 640, (640, 1138)),
    (640, 480, 640, (640, 480)),
    (320, 240, 640, (320, 240)),
    (1280, 720, 0, (1280, 720)),
])
def test_scaled_size_keeps_aspect(w: int, h: int, cap: int, expected: tuple[int, int]) -> None:
    assert frames.scaled_size(w, h, cap) == expected


def test_frame_name_is_the_studys() -> None:
    assert frames.frame_name("/x/519_515.mp4", 120) == "519_515120"


def test_reads_exactly_every_nth_frame(tmp_path) -> None:
    video = make_video(tmp_path / "v.mp4", n_frames=50)
    got, report = frames.read_frames(video, every=10)
    assert [i for i, _ in got] == [0, 10, 20, 30, 40]
    # the content is the frame it claims to be (not consecutive frames, the study's bug)
    for i, frame in got:
        assert abs(float(frame.mean()) - 4 * i) < 8
    assert report.frames_read == 50 and report.frames_kept == 5 and report.error == ""


def test_width_is_capped(tmp_path) -> None:
    video = make_video(tmp_path / "wide.mp4", n_frames=3, size=(800, 200))
    got, _ = frames.read_frames(video, every=1, max_width=640)
    assert got[0][1].shape == (160, 640, 3)


@pytest.mark.parametrize("content", [b"", b"this is not a video" * 100])
def test_unreadable_video_names_the_file(tmp_path, content: bytes) -> None:
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(content)
    with pytest.raises(frames.VideoReadError, match="broken.mp4"):
        frames.read_frames(bad)


def test_truncated_video(tmp_path) -> None:
    # mp4 keeps its index at the end: half a file cannot be opened at all
    mp4 = truncate(make_video(tmp_path / "cut.mp4", n_frames=60))
    with pytest.raises(frames.VideoReadError, match="cut.mp4"):
        frames.read_frames(mp4, every=10)
    # avi/MJPG plays until the cut: the frames before it are kept, the report says so
    avi = truncate(make_video(tmp_path / "cut.avi", n_frames=60, codec="MJPG"))
    got, report = frames.read_frames(avi, every=10)
    assert 0 < len(got) < 6
    assert "truncated" in report.error


def test_frames_per_video_spreads_n_frames_uniformly(tmp_path) -> None:
    """N frames at round(k * (n - 1) / (N - 1)), walked exactly (each is the frame it says),
    and every frame of a video shorter than N."""
    video = make_video(tmp_path / "v.mp4", n_frames=60)
    report = frames.FrameReport(str(video))
    got = list(frames.iter_frames_spread(video, 5, report=report))
    assert [i for i, _ in got] == [0, 15, 30, 44, 59]  # linspace(0, 59, 5) rounded
    for i, frame in got:
        assert abs(float(frame.mean()) - 4 * i) < 8
    assert (report.frames_read, report.frames_kept, report.error) == (60, 5, "")
    assert [i for i, _ in frames.iter_frames_spread(video, 32)] == [
        round(k * 59 / 31) for k in range(32)]
    assert [i for i, _ in frames.iter_frames_spread(video, 100)] == list(range(60))
    with pytest.raises(ValueError, match="frames_per_video"):
        list(frames.iter_frames_spread(video, 0))
