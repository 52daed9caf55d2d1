"""How long `python -m ensemble_dfd.stack` takes on 10 models x 100,000 images.

Builds a synthetic logits store (validation 50,000 + test 40,000 + wild 10,000 images,
groups of 10 frames like short videos), runs the full command with its defaults (all
meta-learners, 5 grouped folds, 1000 group resamples, figures) and prints the wall time and
its ratio to the 60 s target. Usage: python benchmarks/stack_speed.py [--images N]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from ensemble_dfd import stack
from ensemble_dfd.stacking.logits import write_store
from ensemble_dfd.stacking.synthetic_logits import make_store

TARGET_S = 60.0


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--images", type=int, default=100_000, help="images in all splits together")
    p.add_argument("--models", type=int, default=10)
    p.add_argument("--bootstrap", type=int, default=1000)
    args = p.parse_args()
    n = args.images
    sizes = {"validation": n // 2, "test": n * 2 // 5, "wild": n - n // 2 - n * 2 // 5}
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "bench"
        t = time.perf_counter()
        logits, images = make_store(n_models=args.models, sizes=sizes, strength=0.6,
                                    correlation=0.3, group_size=10, group_effect=0.3,
                                    split_strength={"wild": 0.5}, seed=0)
        write_store(run, logits, images)
        setup = time.perf_counter() - t
        t, cpu = time.perf_counter(), time.process_time()
        rc = stack.main(["--run", str(run), "--bootstrap", str(args.bootstrap)])
        secs, cpu = time.perf_counter() - t, time.process_time() - cpu
    print(f"setup (synthetic store): {setup:.1f} s")
    print(f"stack: {args.models} models x {n} images {sizes}, bootstrap {args.bootstrap}, "
          f"cpus {os.cpu_count()}: {secs:.1f} s (exit {rc}); ratio to the {TARGET_S:.0f} s "
          f"target: {secs / TARGET_S:.2f}")
    # CPU seconds of this process: what the run costs when it does not share its cores
    print(f"stack CPU time (user+sys, all threads): {cpu:.1f} s; ratio to target "
          f"{cpu / TARGET_S:.2f}; load average now {os.getloadavg()[0]:.1f}")
    return 0 if rc == 0 and secs < TARGET_S else 1


if __name__ == "__main__":
    raise SystemExit(main())
