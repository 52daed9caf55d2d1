"""Seconds per video and per face for `predict` on CPU, cold and warm, and where they go.

cold: one `python -m ensemble_dfd.predict VIDEO --run RUN` process per video (interpreter
      start + TensorFlow import + loading every model + detection + inference), wall time.
warm: one in-process Predictor (models loaded once, a warm-up call first), each video
      predicted alone; time split into face detection (decode + dlib) and the models
      (+ meta-learner), and with all videos batched together.

Usage: python benchmarks/predict_latency.py --run RUN_DIR [--videos DIR] [--cold N]
Runs on CPU (CUDA_VISIBLE_DEVICES is cleared) and prints ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU figures, even on a machine with a GPU
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "wild"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, required=True, help="run folder with models/ (+stack/)")
    p.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    p.add_argument("--cold", type=int, default=2, help="videos timed in fresh processes")
    p.add_argument("--learner", default="auto")
    args = p.parse_args()
    from ensemble_dfd.verdict import Predictor, expand_inputs

    if not args.videos.is_dir():
        print(f"{args.videos}: absent (the wild videos live in ../shared/data)", file=sys.stderr)
        return 2
    videos = [(f, k) for f, k in expand_inputs([args.videos])[0] if k == "video"]
    print(f"run {args.run}, {len(videos)} videos from {args.videos}, {os.cpu_count()} CPUs")

    cold = []
    for path, _ in videos[: args.cold]:
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ensemble_dfd.predict", str(path),
                               "--run", str(args.run), "--learner", args.learner],
                              capture_output=True, text=True)
        cold.append(time.perf_counter() - t)
        if proc.returncode not in (0, 3):
            print(proc.stderr, file=sys.stderr)
            return 1

    t = time.perf_counter()
    pred = Predictor(args.run, args.learner)
    load = time.perf_counter() - t
    pred.predict_paths(videos[:1])  # warm-up: first Keras predict traces its graph
    rows = []
    for item in videos:
        t0 = time.perf_counter()
        d0, m0 = pred.timing.detect_s, pred.timing.models_s + pred.timing.combine_s
        (rec,), _ = pred.predict_paths([item])
        rows.append({"video": item[0].name, "faces": rec["faces"],
                     "total": time.perf_counter() - t0,
                     "detect": pred.timing.detect_s - d0,
                     "models": pred.timing.models_s + pred.timing.combine_s - m0})
    t = time.perf_counter()
    batched, _ = pred.predict_paths(videos)
    batched_s = time.perf_counter() - t

    faces = sum(r["faces"] for r in rows)
    total = sum(r["total"] for r in rows)
    detect = sum(r["detect"] for r in rows)
    models = sum(r["models"] for r in rows)
    n = len(rows)
    print(f"models: {', '.join(pred.model_refs)} (sizes {sorted(set(pred.sizes.values()))} px), "
          f"learner {pred.learner_name}; model load {load:.2f} s in-process")
    print(f"{'video':<18}{'faces':>6}{'total s':>9}{'detect s':>10}{'models s':>10}")
    for r in rows:
        print(f"{r['video']:<18}{r['faces']:>6}{r['total']:>9.2f}{r['detect']:>10.2f}"
              f"{r['models']:>10.3f}")
    if cold:
        print(f"cold: {sum(cold) / len(cold):.2f} s per video ({len(cold)} fresh processes: "
              "start + TF import + model load + predict)")
    print(f"warm: {total / n:.2f} s per video, {total / max(faces, 1):.3f} s per face "
          f"({faces} faces in {n} videos, one video per call)")
    print(f"warm, all {n} videos in one call (faces batched): {batched_s:.2f} s = "
          f"{batched_s / n:.2f} s per video, {batched_s / max(faces, 1):.3f} s per face")
    print(f"share of warm time: face detection (decode + dlib) {detect / total:.1%}, "
          f"models + meta-learner {models / total:.1%}, other {1 - (detect + models) / total:.1%}")
    if cold:
        print(f"ratio cold / warm per video: {sum(cold) / len(cold) / (total / n):.1f}x")
    assert sum(r["faces"] for r in batched) == faces
    return 0


if __name__ == "__main__":
    sys.exit(main())
