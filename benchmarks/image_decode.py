"""A verdict's image decode in-process vs in the warm worker process, in one run.

Per image, alternating: ``read_rgb`` (the old in-process decode) and ``decode_rgb`` through
the warm worker (``data/decode_worker.py``: a request over a pipe, the decode, the pixels
copied back). Images: face crops of dfd-mini's test split (real JPEGs, 70-830 px; skipped
without ../shared/data) and a 1920x1080 JPEG photo built here (where the pixel copy costs
most). Also the cold start of a worker (paid once per process, and after a kill).

Usage: python benchmarks/image_decode.py [--crops N] [--repeats R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from ensemble_dfd.data import decode_worker as dw
from ensemble_dfd.data.images import read_rgb
from ensemble_dfd.data.synthetic import draw_face
from ensemble_dfd.inference.limits import Deadline, Limits

ROOT = Path(__file__).resolve().parents[1]
CROPS = ROOT.parent / "shared" / "data" / "dfd-mini" / "test"


def photo(folder: Path) -> Path:
    """A 1920x1080 JPEG with a face drawn in it: a phone photo's size."""
    img = cv2.resize(draw_face(np.random.default_rng(0), 540), (1920, 1080))
    img = cv2.add(img, np.random.default_rng(1).integers(0, 20, img.shape, dtype=np.uint8))
    path = folder / "photo.jpg"
    cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    return path


def timed(files: list[Path], repeats: int, max_pixels: int) -> tuple[list[float], list[float]]:
    """Milliseconds per decode, in-process and via the worker, alternating per image."""
    local, worker = [], []
    for _ in range(repeats):
        for f in files:
            t0 = time.perf_counter()
            a = read_rgb(f)
            t1 = time.perf_counter()
            b, how = dw.decode_rgb(f, Deadline(60), max_pixels)
            t2 = time.perf_counter()
            assert how == "worker" and np.array_equal(a, b), f
            local.append((t1 - t0) * 1e3)
            worker.append((t2 - t1) * 1e3)
    return local, worker


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--crops", type=int, default=50)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    max_pixels = Limits().max_pixels
    t0 = time.perf_counter()
    dw.POOL.give(dw.POOL.take(max_pixels, dw.memory_budget(max_pixels), Deadline(60)))
    print(f"worker cold start: {(time.perf_counter() - t0) * 1e3:.0f} ms (once per process)")
    with tempfile.TemporaryDirectory() as tmp:
        sets = {"1920x1080 JPEG photo": [photo(Path(tmp))]}
        if CROPS.is_dir():
            sets[f"dfd-mini test face crops ({args.crops})"] = sorted(
                CROPS.glob("*/*.jpg"))[:args.crops]
        else:
            print(f"(no {CROPS}: face crops skipped)")
        print("| images | in-process ms (median) | worker ms (median) | added ms | ratio |")
        print("|---|---|---|---|---|")
        for name, files in sets.items():
            local, worker = timed(files, args.repeats, max_pixels)
            a, b = statistics.median(local), statistics.median(worker)
            print(f"| {name} | {a:.2f} | {b:.2f} | {b - a:+.2f} | {b / a:.2f}x |")


if __name__ == "__main__":
    main()
