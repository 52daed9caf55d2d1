"""Faces/second of `prepare faces` against a loop written the study's way, in one run.

The study's way: one process reads every frame with cap.read(), writes each kept frame to
JPEG, reads it back, detects (dlib HOG, upsample 1), keeps frames with exactly one face and
writes the tight crop. `prepare` grabs skipped frames without converting them, keeps frames
in memory and spreads videos over --workers processes. Same videos, same frame indices,
same detector: the face counts must be identical.

The Dask column runs the same `prepare faces` on a local Dask cluster of --workers worker
processes (`--dask-workers N`, cluster start-up included) against the process pool with
`--workers N` (target: >= 0.9x); skipped when dask is not installed.

    python benchmarks/prepare_throughput.py [--videos ../shared/data/wild] [--every 120]
                                            [--workers 2] [--no-dask]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import cv2
import pandas as pd

from ensemble_dfd.data import faces as facelib
from ensemble_dfd.data.frames import VIDEO_SUFFIXES, cap_width
from ensemble_dfd.prepare import main as prepare_main

ROOT = Path(__file__).resolve().parents[1]


def study_loop(videos: list[Path], out: Path, every: int, max_width: int) -> dict[str, int]:
    """Frames to JPEG on disk, read back, detect, crop: one process, as the study did
    (with its frame-selection bug fixed, so both sides see the same frames)."""
    counts: dict[str, int] = {}
    for video in videos:
        frame_dir = out / "frames" / video.stem
        frame_dir.mkdir(parents=True)
        cap = cv2.VideoCapture(str(video))
        index = 0
        names = []
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            if index % every == 0:
                name = frame_dir / f"{video.stem}{index}.jpg"
                cv2.imwrite(str(name), cap_width(frame, max_width))
                names.append(name)
            index += 1
        cap.release()
        counts[video.stem] = 0
        for name in names:
            rgb = cv2.cvtColor(cv2.imread(str(name)), cv2.COLOR_BGR2RGB)
            boxes = facelib.face_locations(rgb, 1, "hog")
            if len(boxes) == 1:
                top, right, bottom, left = boxes[0]
                crop = cv2.cvtColor(rgb[top:bottom, left:right], cv2.COLOR_RGB2BGR)
                cv2.imwrite(str(name.with_name(name.stem + "F.jpg")), crop)
                counts[video.stem] += 1
    return counts


def face_counts(out: Path) -> dict[str, int]:
    log = pd.read_csv(out / "face_log.csv", dtype={"video": str})
    return dict(zip(log["video"], log["faces_saved"].astype(int), strict=True))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "wild")
    ap.add_argument("--every", type=int, default=120)
    ap.add_argument("--max-width", type=int, default=640)
    ap.add_argument("--workers", type=int, default=0, help="for prepare (0 = all cores)")
    ap.add_argument("--no-dask", action="store_true", help="skip the Dask column")
    args = ap.parse_args()
    if not args.videos.is_dir():
        print(f"skip: {args.videos} is absent (../shared/data beside the checkout)")
        return 0
    videos = sorted(p for p in args.videos.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    facelib.get_detector("hog")  # load once, outside both timings
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        t0 = time.perf_counter()
        study = study_loop(videos, tmp_path / "study", args.every, args.max_width)
        t_study = time.perf_counter() - t0

        t0 = time.perf_counter()
        rc = prepare_main(["faces", "--videos", str(args.videos), "--out",
                           str(tmp_path / "prepare"), "--every", str(args.every),
                           "--max-width", str(args.max_width),
                           "--workers", str(args.workers)])
        t_prep = time.perf_counter() - t0
        assert rc == 0, f"prepare exited {rc}"
        ours = face_counts(tmp_path / "prepare")
        on_dask = None
        if not args.no_dask and importlib.util.find_spec("distributed") is not None:
            t0 = time.perf_counter()
            rc = prepare_main(["faces", "--videos", str(args.videos), "--out",
                               str(tmp_path / "dask"), "--every", str(args.every),
                               "--max-width", str(args.max_width),
                               "--dask-workers", str(args.workers or os.cpu_count())])
            t_dask = time.perf_counter() - t0
            assert rc == 0, f"prepare on dask exited {rc}"
            on_dask = face_counts(tmp_path / "dask")
        shutil.rmtree(tmp_path, ignore_errors=True)
    n_study, n_ours = sum(study.values()), sum(ours.values())
    r_study, r_ours = n_study / t_study, n_ours / t_prep
    print(f"videos: {len(videos)} from {args.videos}; every {args.every} frames; "
          f"cores: {os.cpu_count()}")
    print(f"study loop (JPEG round trip, 1 process): {n_study} faces in {t_study:.2f} s "
          f"= {r_study:.2f} faces/s")
    print(f"prepare faces (in memory, {args.workers or os.cpu_count()} workers): {n_ours} "
          f"faces in {t_prep:.2f} s = {r_ours:.2f} faces/s")
    print(f"speed-up: {r_ours / r_study:.2f}x (target >= 1.8x on 2 cores)")
    if on_dask is not None:
        r_dask = sum(on_dask.values()) / t_dask
        print(f"prepare faces on a local Dask cluster ({args.workers or os.cpu_count()} "
              f"workers, start-up included): {sum(on_dask.values())} faces in {t_dask:.2f} s "
              f"= {r_dask:.2f} faces/s; Dask / process pool: {r_dask / r_ours:.2f}x "
              "(target >= 0.9x)")
        assert on_dask == ours, f"face counts differ: dask {on_dask} vs prepare {ours}"
    else:
        print("Dask column skipped (--no-dask, or dask[distributed] not installed)")
    assert study == ours, f"face counts differ: study {study} vs prepare {ours}"
    print("face counts identical per video")
    return 0


if __name__ == "__main__":
    sys.exit(main())
