"""Faces/second of `prepare`'s face stage per stage and per detection setting, with the
recall of each setting against the study's detector, all in one run.

Per video: the container is opened and the kept frames decoded by today's reader (OpenCV,
grab every frame) and by the planned PyAV reader (keyframe layout first, threaded decoding,
data/avframes.py), alternating which goes first; both must give the same pixels. Per frame,
every detection setting runs in a rotating order (fair on a shared machine): colour
conversion, detection, the one-face rule and crop, JPEG encode, write. A setting is
``detector@size`` (size = --detect-size, 0 = the study's search: HOG, upsample 1, on the
frame capped at 640 px wide) or ``...+full`` (boxes mapped to the uncapped frame, crops cut
from it). Recall: a face the study's setting finds on a frame is missed by a setting that
has no box with IoU >= 0.5 on it (boxes compared on the 640-px frame).

    python benchmarks/faces_speed.py [--videos ../shared/data/wild ../shared/data/layouts]
        [--every 30] [--frames-per-video 32] [--settings hog@0 hog@960 ...]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from ensemble_dfd.data import avframes
from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data import frames as framelib
from ensemble_dfd.prepare.extract import write_jpeg

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
DEFAULT_SETTINGS = ("hog@0", "hog@1280", "hog@960", "hog@800", "hog@640", "hog@960+full",
                    "blazeface@0", "blazeface@0+full")
STAGES = ("open", "decode", "resize", "colour", "detect", "crop", "encode", "write")


def videos_in(dirs: list[Path]) -> list[Path]:
    """Videos under the folders, one per file name (the layouts repeat the wild videos)."""
    seen: dict[str, Path] = {}
    for d in dirs:
        for p in sorted(d.rglob("*")):
            if p.suffix.lower() in framelib.VIDEO_SUFFIXES and p.name not in seen:
                seen[p.name] = p
    return list(seen.values())


def timed(fn: Callable, *args, **kw):
    t = time.perf_counter()
    out = fn(*args, **kw)
    return out, time.perf_counter() - t


def read_both(path: Path, mode: str, arg: int, first_av: bool) -> tuple[dict, list]:
    """Seconds to open and decode the kept frames with OpenCV and with PyAV (full
    resolution), and the frames; both readers must agree pixel for pixel."""
    def read(use_av: bool) -> list:
        saved = avframes.have_pyav
        avframes.have_pyav = (lambda: True) if use_av else (lambda: False)
        try:
            if mode == "every":
                return list(framelib.iter_frames(path, every=arg, max_width=0))
            return list(framelib.iter_frames_spread(path, arg, max_width=0))
        finally:
            avframes.have_pyav = saved

    secs, got = {}, {}
    for use_av in ((True, False) if first_av else (False, True)):
        name = "av" if use_av else "cv2"
        got[name], secs[f"decode_{name}"] = timed(read, use_av)
        if use_av:
            import av
            _, secs["open_av"] = timed(lambda: av.open(str(path)).close())
        else:
            _, secs["open_cv2"] = timed(lambda: cv2.VideoCapture(str(path)).release())
    pairs = zip(got["av"], got["cv2"], strict=False)
    same = ([i for i, _ in got["av"]] == [i for i, _ in got["cv2"]] and
            all(np.array_equal(a, b) for (_, a), (_, b) in pairs))
    if not same:
        sys.exit(f"{path}: the two readers gave different frames")
    for r in ("av", "cv2"):  # the decode time without the open
        secs[f"decode_{r}"] = max(0.0, secs[f"decode_{r}"] - secs[f"open_{r}"])
    return secs, got["av"]


def iou(a: facelib.Box, b: facelib.Box) -> float:
    t, r, btm, lf = max(a[0], b[0]), min(a[1], b[1]), min(a[2], b[2]), max(a[3], b[3])
    inter = max(0, r - lf) * max(0, btm - t)
    area = lambda x: (x[1] - x[3]) * (x[2] - x[0])  # noqa: E731
    union = area(a) + area(b) - inter
    return inter / union if union > 0 else 0.0


def run_setting(setting: str, full: np.ndarray, capped: np.ndarray, out: Path,
                stat: dict) -> list[facelib.Box]:
    """One frame through one setting; adds stage seconds and counts to ``stat``; returns
    its boxes on the 640-px frame."""
    model, rest = setting.split("@")
    size, _, extra = rest.partition("+")
    src = full if extra == "full" else capped
    rgb, t_col = timed(cv2.cvtColor, src, cv2.COLOR_BGR2RGB)
    boxes, t_det = timed(facelib.find_faces, rgb, 1, model, int(size))
    t0 = time.perf_counter()
    kept, why = facelib.select_faces(boxes, True)
    crops = [np.ascontiguousarray(facelib.crop(rgb, facelib.expand_box(b, 0.0, rgb.shape)))
             for b in kept]
    t_crop = time.perf_counter() - t0
    t_enc = t_wr = 0.0
    for k, c in enumerate(crops):
        from ensemble_dfd.data.jpeg import encode_jpeg
        data, t = timed(encode_jpeg, c, 95)
        t_enc += t
        t0 = time.perf_counter()
        p = out / f"{k}.jpg"
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(p)
        t_wr += time.perf_counter() - t0
        stat["crop_px"] += c.shape[0] * c.shape[1]
    for k, v in zip(("colour", "detect", "crop", "encode", "write"),
                    (t_col, t_det, t_crop, t_enc, t_wr), strict=False):
        stat[k] += v
    stat["faces"] += len(crops)
    stat["frames"] += 1
    if src is full:
        return [facelib.map_box(b, full.shape, capped.shape) for b in boxes]
    return boxes


def bench(videos: list[Path], mode: str, arg: int, settings: list[str]) -> None:
    stats = {s: defaultdict(float) for s in settings}
    io = defaultdict(float)
    study_faces = 0
    missed = defaultdict(int)
    n_frames = 0
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        write_jpeg(out / "warm.jpg", np.zeros((8, 8, 3), np.uint8), 95)
        for v_i, video in enumerate(videos):
            secs, frames = read_both(video, mode, arg, first_av=v_i % 2 == 0)
            for k, s in secs.items():
                io[k] += s
            for f_i, (_, full) in enumerate(frames):
                capped, t = timed(framelib.cap_width, full, 640)
                io["resize"] += t
                n_frames += 1
                order = settings[f_i % len(settings):] + settings[:f_i % len(settings)]
                found = {s: run_setting(s, full, capped, out, stats[s]) for s in order}
                ref = found[settings[0]]
                study_faces += len(ref)
                for s in settings:
                    missed[s] += sum(1 for b in ref if not any(iou(b, o) >= 0.5
                                                               for o in found[s]))
    report(videos, mode, arg, settings, stats, io, study_faces, missed, n_frames)


def report(videos, mode, arg, settings, stats, io, study_faces, missed, n_frames) -> None:
    what = f"--every {arg}" if mode == "every" else f"--frames-per-video {arg}"
    print(f"\n## {len(videos)} videos, {what}: {n_frames} frames, {study_faces} faces found "
          f"by the study's setting ({settings[0]})")
    print(f"open: OpenCV {io['open_cv2']:.2f} s, PyAV {io['open_av']:.2f} s; decode (kept "
          f"frames, full size): OpenCV grab-walk {io['decode_cv2']:.2f} s, PyAV planned "
          f"{io['decode_av']:.2f} s ({io['decode_cv2'] / max(io['decode_av'], 1e-9):.2f}x); "
          f"resize to 640 px {io['resize']:.2f} s")
    base = None
    print("| setting | reader | detect ms/frame | faces | crop px | recall vs study | "
          "faces/s | x study | " + " | ".join(f"{s} %" for s in STAGES) + " |")
    print("|" + "---|" * (8 + len(STAGES)))
    for i, s in enumerate(settings):
        st = stats[s]
        reader = "cv2" if i == 0 else "av"
        t = {"open": io[f"open_{reader}"], "decode": io[f"decode_{reader}"],
             "resize": io["resize"] if "+full" not in s else 0.0,
             **{k: st[k] for k in STAGES[3:]}}
        total = sum(t.values())
        fps = st["faces"] / total if total else 0.0
        base = fps if base is None else base
        recall = 1 - missed[s] / study_faces if study_faces else float("nan")
        px = st["crop_px"] / st["faces"] if st["faces"] else 0
        print(f"| {s} | {reader} | {1000 * st['detect'] / max(st['frames'], 1):.0f} | "
              f"{int(st['faces'])} | {px:,.0f} | {recall:.3f} | {fps:.2f} | "
              f"{fps / base if base else 0:.2f} | "
              + " | ".join(f"{100 * t[k] / total:.0f}" for k in STAGES) + " |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--videos", type=Path, nargs="+",
                    default=[SHARED / "wild", SHARED / "layouts"])
    ap.add_argument("--every", type=int, default=30)
    ap.add_argument("--frames-per-video", type=int, default=32)
    ap.add_argument("--settings", nargs="+", default=list(DEFAULT_SETTINGS),
                    help="the first is the reference (the study's: hog@0)")
    ap.add_argument("--max-videos", type=int, default=0)
    args = ap.parse_args(argv)
    videos = videos_in(args.videos)[: args.max_videos or None]
    import os

    avframes.set_threads(avframes.share_of_cores(1))  # as prepare's one worker decodes

    print(f"# faces_speed: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at "
          "start; every setting is timed on the same frames, in a rotating order, in this "
          "one run")
    if args.every:
        bench(videos, "every", args.every, args.settings)
    if args.frames_per_video:
        bench(videos, "spread", args.frames_per_video, args.settings)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
