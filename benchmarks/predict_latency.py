"""Seconds to a verdict on CPU: Keras vs the ONNX artifacts, cold and warm, in one run.

cold: a fresh ``python -m ensemble_dfd.predict VIDEO --run RUN --backend B`` process per
      backend (interpreter start + imports + loading every model + the verdict), wall time.
warm: one in-process Predictor per backend, warmed up first (every batch shape once, as
      ``serve`` does before it reports ready), then each video predicted alone; median and
      max per video, and where the time goes (frame decoding + face detection vs models).

--keyframes adds a third column: ONNX with keyframe-only video reading (predict --keyframes).
--study-detection adds another: ONNX with the study's detection (dlib HOG, upsample 1, on the
640-px frame) in place of the run's, and the verdicts' agreement with the run's detection
(same label, |p_real| apart, and each one's accuracy where the videos have labels.csv).

--faces-only (no run needed): the verdict's face path alone (``extract_faces`` with the
default limits, detector warm), per video and per detection setting, alternating settings
per video: the study's (OpenCV reader, HOG upsample 1 on the 640-px frame) against the
planned PyAV reader with --detect-size / BlazeFace; decoding vs detection seconds, and the
faces each finds.

Usage: python benchmarks/predict_latency.py --run RUN_DIR [--videos DIR] [--cold N] [--keyframes]
       python benchmarks/predict_latency.py --faces-only [--videos DIR]
Export the artifacts first: python -m ensemble_dfd.artifacts --run RUN_DIR
Runs on CPU (CUDA_VISIBLE_DEVICES is cleared) and prints ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU figures, even on a machine with a GPU
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_VIDEOS = ROOT.parent / "shared" / "data" / "wild"
BACKENDS = ("keras", "onnx")


def cold_runs(run: Path, video: Path, backend: str, n: int, learner: str,
              keyframes: bool = False) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "ensemble_dfd.predict", str(video),
                               "--run", str(run), "--learner", learner, "--backend", backend]
                              + (["--keyframes"] if keyframes else []),
                              capture_output=True, text=True)
        out.append(time.perf_counter() - t)
        if proc.returncode not in (0, 3):
            raise SystemExit(f"predict failed ({proc.returncode}):\n{proc.stderr}")
    return out


STUDY_DETECTION = {"detector": "hog", "detect_size": 0, "upsample": 1}


def warm_runs(run: Path, videos: list, backend: str, learner: str,
              keyframes: bool = False, detection: dict | None = None) -> dict:
    from dataclasses import replace

    from ensemble_dfd.data import faces as facelib
    from ensemble_dfd.inference.limits import Limits
    from ensemble_dfd.inference.verdict import Predictor

    t = time.perf_counter()
    pred = Predictor(run, learner, backend=backend, limits=Limits(keyframes=keyframes))
    if detection:  # score with other detection settings than the run's (warm detector)
        pred.prepare = replace(pred.prepare, **detection)
        facelib.check_detector(pred.prepare.detector)
    load = time.perf_counter() - t
    warm = pred.warm_up()
    used = sorted(set(pred.backends.values()))
    rows = []
    for item in videos:
        t0 = time.perf_counter()
        d0, m0 = pred.timing.detect_s, pred.timing.models_s + pred.timing.combine_s
        (rec,), _ = pred.predict_paths([item])
        rows.append({"video": item[0].name, "faces": rec["faces"], "p_real": rec["p_real"],
                     "verdict": rec["verdict"],
                     "total": time.perf_counter() - t0,
                     "detect": pred.timing.detect_s - d0,
                     "models": pred.timing.models_s + pred.timing.combine_s - m0})
    del pred
    gc.collect()
    return {"load": load, "warm_up": warm, "rows": rows, "backends": used}


FACE_SETTINGS = (("study: cv2 + hog@0", "hog", 0, False), ("av + hog@960", "hog", 960, True),
                 ("av + blazeface", "blazeface", 0, True))


def faces_only(videos: list) -> int:
    """Warm face extraction per video for each setting (decoding vs detection)."""
    from dataclasses import replace

    from ensemble_dfd.config import PrepareConfig
    from ensemble_dfd.data import avframes
    from ensemble_dfd.data import faces as facelib
    from ensemble_dfd.inference.verdict import extract_faces

    real_find, spent = facelib.find_faces, [0.0]

    def timed_find(*a, **k):
        t = time.perf_counter()
        try:
            return real_find(*a, **k)
        finally:
            spent[0] += time.perf_counter() - t

    facelib.find_faces = timed_find
    base, have_av = PrepareConfig(), avframes.have_pyav
    rows: dict[str, list] = {name: [] for name, *_ in FACE_SETTINGS}
    for _name, det, _, _ in FACE_SETTINGS:  # warm: detectors built before timing
        facelib.check_detector(det)
    for i, (video, _) in enumerate(videos):
        order = FACE_SETTINGS[i % 3:] + FACE_SETTINGS[:i % 3]
        for name, det, size, use_av in order:
            avframes.have_pyav = (lambda u=use_av: u and have_av())
            p = replace(base, detector=det, detect_size=size)
            spent[0] = 0.0
            t = time.perf_counter()
            res = extract_faces(video, "video", p)
            total = time.perf_counter() - t
            rows[name].append((video.name, len(res.faces), total, spent[0]))
    avframes.have_pyav = have_av
    print(f"\n{'video':<18}" + "".join(f"{n:>28}" for n in rows))
    for j, (video, _) in enumerate(videos):
        print(f"{video.name:<18}" + "".join(
            f"{r[j][1]:>6} faces {r[j][2]:>5.2f} s (det {r[j][3]:.2f})" for r in rows.values()))
    ref = statistics.median(r[2] for r in rows[FACE_SETTINGS[0][0]])
    for name, r in rows.items():
        med = statistics.median(x[2] for x in r)
        det = statistics.median(x[3] for x in r)
        print(f"{name:<22} warm per video median {med:.2f} s (detection {det:.2f} s, "
              f"decoding and the rest {med - det:.2f} s), {sum(x[1] for x in r)} faces; "
              f"study/this {ref / med:.2f}x")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", type=Path, help="run folder with models/ (+stack/)")
    p.add_argument("--faces-only", action="store_true",
                   help="time only the verdict's face path (no run needed)")
    p.add_argument("--videos", type=Path, default=DEFAULT_VIDEOS)
    p.add_argument("--cold", type=int, default=1, help="fresh processes per backend")
    p.add_argument("--learner", default="auto")
    p.add_argument("--keyframes", action="store_true",
                   help="also time ONNX with keyframe-only video reading (predict --keyframes)")
    p.add_argument("--study-detection", action="store_true",
                   help="also score with the study's detection; report the agreement")
    args = p.parse_args()
    configs = {b: (b, False, None) for b in BACKENDS}
    if args.keyframes:
        configs["onnx+kf"] = ("onnx", True, None)
    if args.study_detection:
        configs["study"] = ("onnx", False, STUDY_DETECTION)
    from ensemble_dfd.inference.verdict import expand_inputs

    if not args.videos.is_dir():
        print(f"{args.videos}: absent (the wild videos live in ../shared/data)", file=sys.stderr)
        return 2
    videos = [(f, k) for f, k in expand_inputs([args.videos])[0] if k == "video"]
    if args.faces_only:
        print(f"{len(videos)} videos from {args.videos}, {os.cpu_count()} CPUs, load average "
              f"{os.getloadavg()[0]:.1f} at start (a shared machine)")
        return faces_only(videos)
    if args.run is None:
        p.error("--run is required (or --faces-only)")
    print(f"run {args.run}, {len(videos)} videos from {args.videos}, {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f} at start")
    results = {}
    for name, (backend, kf, detection) in configs.items():
        cold = ([] if detection else
                cold_runs(args.run, videos[0][0], backend, args.cold, args.learner, kf))
        results[name] = {"cold": cold or [float("nan")],
                         **warm_runs(args.run, videos, backend, args.learner, kf, detection)}
    print(f"\n{'video':<18}{'faces':>6}" + "".join(
        f"{b + ' s':>10}{'detect':>8}{'models':>8}" for b in configs))
    for i, (path, _) in enumerate(videos):
        line = f"{path.name:<18}{results[BACKENDS[0]]['rows'][i]['faces']:>6}"
        for b in configs:
            r = results[b]["rows"][i]
            line += f"{r['total']:>10.2f}{r['detect']:>8.2f}{r['models']:>8.3f}"
        print(line)
    print()
    for b in configs:
        res = results[b]
        totals = [r["total"] for r in res["rows"]]
        med, mx = statistics.median(totals), max(totals)
        models = statistics.median(r["models"] for r in res["rows"])
        print(f"{b:<6} (models run by {', '.join(res['backends'])}): cold to first verdict "
              f"{statistics.median(res['cold']):.1f} s ({videos[0][0].name}, fresh process); "
              f"in-process load {res['load']:.1f} s + warm-up {res['warm_up']:.1f} s; warm "
              f"per video median {med:.2f} s, max {mx:.2f} s (max/median {mx / med:.2f}); "
              f"models per video median {models:.3f} s")
    k, o = results["keras"], results["onnx"]

    def med(b: str, key: str) -> float:
        return statistics.median(r[key] for r in results[b]["rows"])

    print(f"\nratio keras/onnx: cold "
          f"{statistics.median(k['cold']) / statistics.median(o['cold']):.1f}x, warm per "
          f"video {med('keras', 'total') / med('onnx', 'total'):.2f}x, models per video "
          f"{med('keras', 'models') / max(med('onnx', 'models'), 1e-9):.1f}x")
    same = all(abs((a["p_real"] or 0) - (b["p_real"] or 0)) < 1e-4
               for a, b in zip(k["rows"], o["rows"], strict=True))
    print(f"same verdict scores (|p_real diff| < 1e-4 on every video): {same}")
    if "study" in results:
        agreement(o["rows"], results["study"]["rows"], args.videos / "labels.csv")
    return 0


def agreement(run_rows: list[dict], study_rows: list[dict], labels: Path) -> None:
    """Verdicts with the run's detection vs the study's: same label, |p_real| apart,
    accuracy of each against labels.csv (path,label) where it exists."""
    truth = {}
    if labels.is_file():
        import pandas as pd

        truth = {Path(r.path).name: str(r.label).lower()
                 for r in pd.read_csv(labels).itertuples()}
    pairs = [(a, b) for a, b in zip(run_rows, study_rows, strict=True)
             if a["verdict"] and b["verdict"]]
    same = sum(a["verdict"] == b["verdict"] for a, b in pairs)
    diffs = [abs(a["p_real"] - b["p_real"]) for a, b in pairs]
    print(f"\nverdicts, the run's detection vs the study's (hog, upsample 1, 640 px): same "
          f"label on {same} of {len(pairs)} videos with faces under both; |p_real| apart: "
          f"median {statistics.median(diffs) if diffs else float('nan'):.3f}, max "
          f"{max(diffs, default=float('nan')):.3f}")
    for name, rows in (("run's detection", run_rows), ("study's detection", study_rows)):
        scored = [r for r in rows if r["verdict"] and r["video"] in truth]
        right = sum(r["verdict"] == truth[r["video"]] for r in scored)
        print(f"  {name}: {right} of {len(scored)} labelled videos right; faces "
              f"{sum(r['faces'] for r in rows)}")


if __name__ == "__main__":
    sys.exit(main())
