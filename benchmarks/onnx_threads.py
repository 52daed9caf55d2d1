"""ONNX Runtime on small batches: the run's artifacts one after the other with ONNX
Runtime's own threads (what verdicts did) against one thread each, run side by side (what
``Predictor.model_logits`` does now). Random uint8 faces at each model's input size; the
median of 15 calls per case, all in this one run.

    PYTHONPATH=src python benchmarks/onnx_threads.py --run RUN [--faces 3 7 32]
"""

from __future__ import annotations

import argparse
import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

CASES = {"one after the other, ORT's threads": (0, 1), "one after the other, 1 thread": (1, 1),
         "2 at a time, 1 thread each": (1, 2), "2 at a time, ORT's threads": (0, 2),
         "10 at a time, 1 thread each": (1, 10)}


def sessions(paths: list[Path], threads: int) -> list:
    import onnxruntime as ort

    out = []
    for path in paths:
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        if threads:
            opts.intra_op_num_threads = threads
        out.append(ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"]))
    return out


def feeds(ss: list, n: int) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for s in ss:
        inp = s.get_inputs()[0]
        dtype = np.uint8 if inp.type == "tensor(uint8)" else np.float32
        x = rng.integers(0, 256, (n, inp.shape[1], inp.shape[2], 3)).astype(dtype)
        out.append({inp.name: x})
    return out


def median_ms(ss: list, xs: list[dict], workers: int, reps: int = 15) -> float:
    def run(k: int):
        return ss[k].run(None, xs[k])

    for k in range(len(ss)):  # warm
        run(k)
    times = []
    with ThreadPoolExecutor(workers) as pool:
        for _ in range(reps):
            t = time.perf_counter()
            if workers == 1:
                for k in range(len(ss)):
                    run(k)
            else:
                list(pool.map(run, range(len(ss))))
            times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", type=Path, required=True, help="run folder with model.onnx files")
    ap.add_argument("--faces", type=int, nargs="+", default=[3, 7, 32])
    args = ap.parse_args()
    paths = sorted(args.run.glob("models/*/model.onnx"))
    print(f"{len(paths)} ONNX artifacts in {args.run}; median ms of 15 calls of all of them")
    print("| faces | " + " | ".join(CASES) + " |")
    print("|---" * (len(CASES) + 1) + "|")
    for n in args.faces:
        cells = []
        for threads, workers in CASES.values():
            ss = sessions(paths, threads)
            cells.append(f"{median_ms(ss, feeds(ss, n), workers):,.0f}")
        print(f"| {n} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
