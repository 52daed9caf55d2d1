"""Limits on hostile input (no trained run needed): header-bomb images, frame-count-bomb
videos, deadlines, the whole-image rule, and who may call the service."""

from __future__ import annotations

import struct
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from hostile_media import (
    peak_rss_mb,
    tiff_bytes,
    write_cut_avi,
    write_frame_bomb,
    write_png_bomb,
    write_scan_bomb,
    write_tiff_huge_tile,
    write_tiff_repeated_size,
)
from synthetic_media import make_image, make_video

from ensemble_dfd.config import PrepareConfig
from ensemble_dfd.data import frames as framelib
from ensemble_dfd.data.image_checks import (
    ImageStructureError,
    check_image_structure,
    jpeg_scans,
    scan_limit,
)
from ensemble_dfd.data.synthetic import draw_face
from ensemble_dfd.inference.access import AccessPolicy, bind_warning, host_name
from ensemble_dfd.inference.limits import Deadline, LimitExceeded, Limits, image_file_dimensions
from ensemble_dfd.inference.verdict import (
    InputError,
    LimitError,
    expand_inputs,
    extract_faces,
    looks_like_face_crop,
)

# ---------------------------------------------------------------- hostile media


@pytest.fixture(scope="session")
def hostile(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile")
    return {"png_bomb": write_png_bomb(d / "bomb.png"),
            "frame_bomb": write_frame_bomb(d / "bomb.mp4")}


class CountingCapture:
    """cv2.VideoCapture with its decoding calls counted (grab, read, retrieve, set)."""

    calls: dict[str, int] = {}

    def __init__(self, *args):
        self._cap = _REAL_CAPTURE(*args)

    def __getattr__(self, name):
        attr = getattr(self._cap, name)
        if name in ("grab", "read", "retrieve", "set"):
            def counted(*a):
                CountingCapture.calls[name] = CountingCapture.calls.get(name, 0) + 1
                return attr(*a)
            return counted
        return attr


_REAL_CAPTURE = cv2.VideoCapture

# ---------------------------------------------------------------- image headers


@pytest.mark.parametrize("ext, params", [
    (".png", []), (".jpg", []), (".jpg", [cv2.IMWRITE_JPEG_PROGRESSIVE, 1]),
    (".webp", []), (".webp", [cv2.IMWRITE_WEBP_QUALITY, 101]), (".bmp", []), (".tiff", []),
])
def test_image_dimensions_from_header(tmp_path, ext, params):
    path = tmp_path / f"x{ext}"
    assert cv2.imwrite(str(path), np.zeros((37, 53, 3), np.uint8), params)
    assert image_file_dimensions(path) == (53, 37)


def test_image_dimensions_unknown_or_cut(tmp_path):
    (tmp_path / "t.jpg").write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF")  # ends before a frame
    (tmp_path / "n.txt").write_bytes(b"hello")
    assert image_file_dimensions(tmp_path / "t.jpg") is None
    assert image_file_dimensions(tmp_path / "n.txt") is None


def test_header_bomb_png_refused_before_decoding(hostile):
    before = peak_rss_mb()
    t0 = time.perf_counter()
    with pytest.raises(LimitError, match="20000x20000 px is over the limit") as info:
        extract_faces(hostile["png_bomb"], "image", PrepareConfig())
    assert info.value.reason == "size"
    assert time.perf_counter() - t0 < 2.0
    assert peak_rss_mb() - before < 300
    assert hostile["png_bomb"].stat().st_size < 200_000  # the file itself is small


def test_scan_bomb_jpeg_refused_from_its_markers(tmp_path):
    """Issue 26 (2): a progressive JPEG decodes the whole picture once per scan; a small
    file with thousands of repeated scans passed the header check and took minutes."""
    bomb = write_scan_bomb(tmp_path / "scans.jpg", scans=500, size=512)
    assert image_file_dimensions(bomb) == (512, 512)  # passes the header check
    t0 = time.perf_counter()
    with pytest.raises(LimitError, match="more than 100 scans") as info:
        extract_faces(bomb, "image", PrepareConfig())
    assert info.value.reason == "size" and time.perf_counter() - t0 < 1.0
    assert scan_limit(512 * 512) == 100 and scan_limit(25_000_000) == 24
    assert scan_limit(200_000_000) == 12  # a libjpeg progressive file (10 scans) always passes
    # an ordinary progressive JPEG (10 scans) is read as before
    good = tmp_path / "prog.jpg"
    cv2.imwrite(str(good), np.full((64, 64, 3), 90, np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    with good.open("rb") as fh:
        assert 2 <= jpeg_scans(fh) <= 12
    assert extract_faces(good, "image", PrepareConfig(), "as-is").frames_kept == 1


def test_scans_hidden_behind_junk_are_still_counted(tmp_path):
    bomb = write_scan_bomb(tmp_path / "scans.jpg", scans=200, size=64)
    data = bomb.read_bytes()
    first = data.find(b"\xff\xda")  # junk bytes before the first scan: libjpeg skips them
    bomb.write_bytes(data[:first] + b"junk" + data[first:])
    with bomb.open("rb") as fh, pytest.raises(LimitExceeded, match="scans"):
        jpeg_scans(fh)


def test_tiff_with_repeated_size_tags_refused(tmp_path):
    """Issue 26 (3): width/height tags given twice read 16x16 to the header check."""
    path = write_tiff_repeated_size(tmp_path / "rep.tif")
    with pytest.raises(InputError, match="rep.tif: not a decodable image .*tag 256 appears "
                                         "twice"):
        extract_faces(path, "image", PrepareConfig())


def test_tiff_with_one_huge_tile_refused_before_decoding(tmp_path):
    """Issue 26 (3): a 16x16 TIFF stored as one 16000x16000 tile cost ~1 GB to decode."""
    path = write_tiff_huge_tile(tmp_path / "tile.tif")
    assert image_file_dimensions(path) == (16, 16) and path.stat().st_size < 300_000
    before = peak_rss_mb()
    with pytest.raises(LimitError, match="tile of 16000x16000 px is larger than its 16x16"):
        extract_faces(path, "image", PrepareConfig())
    assert peak_rss_mb() - before < 100


@pytest.mark.parametrize("ext, params", [
    (".tiff", []), (".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 1]),
    (".tiff", [cv2.IMWRITE_TIFF_COMPRESSION, 8]),
])
def test_ordinary_tiffs_pass_the_structure_check(tmp_path, ext, params):
    path = tmp_path / f"ok{ext}"
    assert cv2.imwrite(str(path), np.full((40, 30, 3), 100, np.uint8), params)
    check_image_structure(path, 25_000_000)
    assert extract_faces(path, "image", PrepareConfig(), "as-is").frames_kept == 1


@pytest.mark.parametrize("entries, match", [
    ([(256, 3, 1, 16), (257, 3, 1, 16), (259, 3, 1, 6)], "compression 6"),
    ([(256, 3, 1, 16), (257, 3, 1, 16), (277, 3, 1, 300)], "300 samples"),
    ([(256, 3, 1, 16), (257, 3, 1, 16), (330, 4, 1, 8)], "SubIFDs"),
    ([(256, 3, 1, 16), (257, 3, 1, 16), (270, 2, 10**6, 8)], "outside the file"),
    ([(256, 3, 1, 16), (257, 3, 1, 16), (999, 77, 1, 0)], "unknown type"),
    ([(256, 3, 1, 16)], "lacks tag 257"),
])
def test_tiff_outside_the_safe_subset_refused(tmp_path, entries, match):
    path = tmp_path / "x.tif"
    path.write_bytes(tiff_bytes(entries))
    with pytest.raises(ImageStructureError, match=match):
        check_image_structure(path, 25_000_000)


def test_a_tiff_directory_loop_is_refused(tmp_path):
    data = bytearray(tiff_bytes([(256, 3, 1, 16), (257, 3, 1, 16)]))
    data[-4:] = struct.pack("<I", 8)  # the next IFD is this one again
    (tmp_path / "loop.tif").write_bytes(bytes(data))
    with pytest.raises(ImageStructureError, match="loops"):
        check_image_structure(tmp_path / "loop.tif", 25_000_000)


def test_unsized_image_is_bad_input(tmp_path):
    path = tmp_path / "cut.jpg"
    path.write_bytes(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01")
    with pytest.raises(InputError, match="cut.jpg: not a decodable image"):
        extract_faces(path, "image", PrepareConfig())


# ---------------------------------------------------------------- frames


def test_spread_indices_matches_kept_indices_when_small():
    for n, every in [(130, 120), (250, 120), (1, 5), (3000, 100)]:
        assert framelib.spread_indices(n, every, max_frames=32) == framelib.kept_indices(
            n, every)
    assert framelib.spread_indices(0, 120) == []


def test_spread_indices_bounded_and_spread():
    idx = framelib.spread_indices(60_000, 120, max_frames=32)
    assert len(idx) == 32 and idx[0] == 0 and idx[-1] == 59_880
    assert all(i % 120 == 0 for i in idx)
    huge = framelib.spread_indices(2**31, 1, max_frames=32)  # a lying container: no list
    assert len(huge) == 32 and huge[-1] == 2**31 - 1
    secs = framelib.spread_indices(100_000, every_seconds=0.5, fps=30.0, max_frames=10)
    assert len(secs) == 10 and secs[-1] < 100_000


def test_frame_count_bomb_costs_max_frames_decodes(hostile, monkeypatch):
    """The OpenCV reader (without PyAV; the planned reader's bound is in test_avframes)."""
    from ensemble_dfd.data import avframes

    monkeypatch.setattr(avframes, "have_pyav", lambda: False)
    monkeypatch.setattr(cv2, "VideoCapture", CountingCapture)
    CountingCapture.calls = {}
    report = framelib.FrameReport("bomb")
    limits = Limits(max_frames=20)
    t0 = time.perf_counter()
    kept = [i for i, _ in framelib.iter_frames_bounded(hostile["frame_bomb"], 120, 0.0, 640,
                                                       report, limits)]
    elapsed = time.perf_counter() - t0
    assert report.frame_count == 60_000
    assert len(kept) == 20 and kept[-1] == 59_880 and report.error == ""
    assert CountingCapture.calls.get("grab", 0) == 0
    assert CountingCapture.calls["read"] == 20 and CountingCapture.calls["set"] == 20
    assert elapsed < 10.0


def test_frame_count_bomb_extract_within_limits(hostile):
    before = peak_rss_mb()
    t0 = time.perf_counter()
    res = extract_faces(hostile["frame_bomb"], "video", PrepareConfig(), "detect",
                        limits=Limits(max_frames=32))
    assert time.perf_counter() - t0 < 15.0
    assert res.frames_kept == 32 and res.faces == []
    assert peak_rss_mb() - before < 300


def test_short_video_read_exactly_like_prepare(tmp_path):
    video = make_video(tmp_path / "v.mp4", n_frames=250)
    exact = [i for i, _ in framelib.iter_frames(video, every=120)]
    report = framelib.FrameReport("v")
    bounded = [i for i, _ in framelib.iter_frames_bounded(video, 120, 0.0, 640, report,
                                                          Limits())]
    assert bounded == exact == [0, 120, 240]
    two = [i for i, _ in framelib.iter_frames_bounded(video, 10, 0.0, 640,
                                                      framelib.FrameReport("v"),
                                                      Limits(max_frames=2))]
    assert two == [0, 240]


def test_verdict_reads_a_frames_per_video_run_as_prepare_did(tmp_path):
    """A run prepared with frames_per_video = N gets N frames spread over a video here too
    (at most the verdict's max_frames)."""
    video = make_video(tmp_path / "v.mp4", n_frames=60)
    res = extract_faces(video, "video", PrepareConfig(frames_per_video=5), "as-is")
    assert [f.frame for f in res.faces] == [0, 15, 30, 44, 59]
    res = extract_faces(video, "video", PrepareConfig(frames_per_video=5), "as-is",
                        limits=Limits(max_frames=3))
    assert [f.frame for f in res.faces] == [0, 30, 59]


def test_video_cut_short_is_refused(tmp_path):
    cut = write_cut_avi(tmp_path / "cut.avi")
    with pytest.raises(InputError, match=r"cut.avi: truncated: read \d+ of 300 declared"):
        extract_faces(cut, "video", PrepareConfig(), "as-is")


def test_deadline_stops_a_video_between_frames(tmp_path):
    video = make_video(tmp_path / "v.mp4", n_frames=60)
    gone = Deadline(10.0)
    gone.cancel.set()
    with pytest.raises(LimitError, match="cancelled") as info:
        extract_faces(video, "video", PrepareConfig(), "as-is", deadline=gone)
    assert info.value.reason == "cancelled"
    late = Deadline(1e-9)
    time.sleep(0.001)
    with pytest.raises(LimitError, match="took longer than the limit") as info:
        extract_faces(video, "video", PrepareConfig(), "as-is", deadline=late)
    assert info.value.reason == "time"
    with pytest.raises(LimitExceeded):
        late.check()


def test_limits_validated():
    with pytest.raises(ValueError, match="max_frames"):
        Limits(max_frames=0)


# ---------------------------------------------------------------- whole-image rule


def test_whole_image_only_for_plausible_face_crops(tmp_path):
    p = PrepareConfig()
    rng = np.random.default_rng(0)
    noise = (rng.random((200, 200, 3)) * 255).astype(np.uint8)
    assert not looks_like_face_crop(noise, p)
    assert not looks_like_face_crop(np.zeros((1, 1, 3), np.uint8), p)
    assert not looks_like_face_crop(cv2.resize(draw_face(rng, 48), (150, 40)), p)  # 3.75:1
    assert looks_like_face_crop(draw_face(np.random.default_rng(1), 48), p)
    one = tmp_path / "one.png"
    cv2.imwrite(str(one), np.zeros((1, 1, 3), np.uint8))
    noisy = tmp_path / "noise.png"
    cv2.imwrite(str(noisy), noise)
    for f in (one, noisy, make_image(tmp_path / "land.jpg", size=(400, 300))):
        res = extract_faces(f, "image", p, "auto")
        assert res.faces == [] and not res.whole_image, f.name
    crop = tmp_path / "crop.png"
    # seed 3: HOG misses this tight 48 px crop, and finds it once a border is added
    cv2.imwrite(str(crop), cv2.cvtColor(draw_face(np.random.default_rng(3), 48),
                                        cv2.COLOR_RGB2BGR))
    res = extract_faces(crop, "image", p, "auto")
    assert len(res.faces) == 1 and res.whole_image


# ---------------------------------------------------------------- access


def test_access_policy_host_origin_token():
    pol = AccessPolicy()
    local = {"host": "127.0.0.1:8000"}
    assert pol.refuse("/api/predict", local) is None
    assert pol.refuse("/", {"host": "localhost:8000"}) is None
    assert pol.refuse("/", {"host": "[::1]:8000"}) is None
    assert pol.refuse("/api/health", {"host": "evil.example:8000"})[0] == 403  # rebinding
    same = {**local, "origin": "http://127.0.0.1:8000"}
    assert pol.refuse("/api/predict", same) is None
    foreign = {**local, "origin": "https://evil.example"}
    assert pol.refuse("/api/predict", foreign)[0] == 403
    assert pol.refuse("/api/predict", {**local, "origin": "null"})[0] == 403
    assert AccessPolicy(origins=("https://lab.example",)).refuse(
        "/api/predict", {**local, "origin": "https://lab.example"}) is None
    tok = AccessPolicy(token="s3cret")
    assert tok.refuse("/api/predict", local)[0] == 401
    assert tok.refuse("/api/predict", {**local, "authorization": "Bearer nope"})[0] == 401
    assert tok.refuse("/api/predict", {**local, "authorization": "Bearer s3cret"}) is None
    assert tok.refuse("/", local) is None  # the page itself is static
    assert host_name("[::1]:80") == "::1" and host_name("Example.org") == "example.org"


def test_bind_warning():
    assert bind_warning("127.0.0.1", None) is None
    assert bind_warning("localhost", None) is None
    assert "without a token" in bind_warning("0.0.0.0", None)
    assert bind_warning("0.0.0.0", "t") is None


def test_named_pipe_reported_as_such(tmp_path, capsys):
    """Issue 26 (8): a named pipe was reported as 'no such file' (and is never opened:
    reading one would block)."""
    import os

    from ensemble_dfd import predict

    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match="pipe.jpg: a named pipe, not a regular file"):
        expand_inputs([fifo])
    assert predict.main([str(fifo), "--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {fifo}: a named pipe, not a regular file (only image and video "
                   "files are read)"]
