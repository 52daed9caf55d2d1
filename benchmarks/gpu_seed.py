"""GPU check for the seed experiment: training images/s per model, fp32 vs mixed precision,
then the real seed schedule (experiments/seed.toml, weights none) for as many models as the
time budget allows. Made for a short accelerator lease: every result is written as soon as
it exists, and no new model starts past the deadline.

    KERAS_BACKEND=jax python benchmarks/gpu_seed.py --data DIR --out DIR --budget-s 480

Throughput is the study's phase-2 (fine-tuning) step: base unfrozen from layer 100, batch 40,
the study's input size, augmentation on, measured as one model.fit epoch of `steps` batches;
a first 2-batch fit (compilation) is timed apart.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import traceback
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from ensemble_dfd.config import load_config, parse_overrides  # noqa: E402
from ensemble_dfd.data.dataset import load_dataset, select  # noqa: E402
from ensemble_dfd.data.images import load_images  # noqa: E402
from ensemble_dfd.training import (
    accel,
    backbones,  # noqa: E402
)
from ensemble_dfd.training.modeldir import ModelDir  # noqa: E402
from ensemble_dfd.training.plan import plan_model  # noqa: E402
from ensemble_dfd.training.train import TrainData, compile_model, train_one  # noqa: E402

# cheapest to compile first, so a short lease still covers most models
ORDER = ["M6", "M2", "M4", "M9", "M1", "M7", "M3", "M8", "M5", "M10"]


def throughput(ref: str, policy: str, x: np.ndarray, y: np.ndarray, steps: int) -> dict:
    import keras

    keras.mixed_precision.set_global_policy(policy)
    bb = backbones.get(ref)
    model, base = backbones.build_model(bb, x.shape[1], "none")
    backbones.unfreeze(base, bb.fine_tune_at)
    compile_model(model, "rmsprop", 1e-5)
    # model.fit, not train_on_batch: with the JAX backend train_on_batch syncs every
    # variable back after each call, which dominated the first measurement on the H200
    xx = np.concatenate([x] * steps)
    yy = np.concatenate([y] * steps)
    t0 = time.perf_counter()
    model.fit(xx[: 2 * len(x)], yy[: 2 * len(x)], batch_size=len(x), epochs=1, verbose=0)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    model.fit(xx, yy, batch_size=len(x), epochs=1, verbose=0, shuffle=False)
    dt = time.perf_counter() - t0
    return {"ref": ref, "backbone": bb.name, "policy": policy, "image_size": x.shape[1],
            "batch": len(x), "steps": steps, "compile_s": round(compile_s, 2),
            "train_images_per_s": round(steps * len(x) / dt, 1)}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--work", type=Path, default=Path("/tmp/gpu_seed_work"),
                   help="where model files go (kept out of --out, which comes back small)")
    p.add_argument("--budget-s", type=float, default=480)
    p.add_argument("--throughput-budget-s", type=float, default=300)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--seed-models", default="M6,M4,M9,M2")
    p.add_argument("--throughput-models", default=",".join(ORDER))
    p.add_argument("--set", action="append", default=[], help="seed.toml overrides")
    args = p.parse_args()
    start = time.time()
    deadline = start + args.budget_s
    args.out.mkdir(parents=True, exist_ok=True)
    log = (args.out / "log.txt").open("a")

    def say(msg: str) -> None:
        line = f"[{time.strftime('%H:%M:%S')}] {msg}"
        print(line, flush=True)
        log.write(line + "\n")
        log.flush()

    env = accel.describe()
    (args.out / "env.json").write_text(json.dumps(env, indent=2))
    say(f"device {env}")
    rng = np.random.default_rng(0)
    rows_path = args.out / "throughput.csv"
    for ref in [r for r in args.throughput_models.split(",") if r]:
        size = backbones.get(ref).input_size
        x = rng.integers(0, 256, (40, size, size, 3), dtype=np.uint8)
        y = rng.integers(0, 2, (40, 1)).astype("float32")
        for policy in ("float32", "mixed_float16"):
            if time.time() > min(deadline - 60, start + args.throughput_budget_s):
                say("throughput: deadline reached")
                break
            try:
                row = throughput(ref, policy, x, y, args.steps)
            except Exception as exc:  # one model's failure must not lose the others
                row = {"ref": ref, "policy": policy, "error": repr(exc)[:300]}
                traceback.print_exc()
            say(json.dumps(row))
            new = not rows_path.exists()
            with rows_path.open("a", newline="") as fh:
                w = csv.DictWriter(fh, fieldnames=["ref", "backbone", "policy", "image_size",
                                                   "batch", "steps", "compile_s",
                                                   "train_images_per_s", "error"])
                if new:
                    w.writeheader()
                w.writerow(row)
    # the real seed schedule, weights none, for as many models as time allows
    root = Path(__file__).resolve().parents[1]
    cfg = load_config(root / "experiments" / "seed.toml",
                      parse_overrides(["train.weights=none", "train.mixed_precision=on",
                                       *args.set]))
    accel.set_precision("on")
    df = load_dataset(args.data)
    cache: dict = {}
    for ref in args.seed_models.split(","):
        if time.time() > deadline - 150:
            say(f"seed schedule: deadline reached before {ref}")
            break
        plan = plan_model(cfg, ref)
        size = plan.image_size
        if size not in cache:
            parts = [select(df, s, cfg.data.limit) for s in ("train", "validation")]
            cache[size] = [load_images(pp["file"].tolist(), size) for pp in parts] + \
                          [pp["label"].to_numpy() for pp in parts]
        xt, xv, yt, yv = cache[size]
        t0 = time.time()
        try:
            model_dir = ModelDir(args.work / ref)
            summary = train_one(plan, TrainData(xt, yt, xv, yv), model_dir, say)
        except Exception as exc:
            say(f"{ref} failed: {exc!r}")
            traceback.print_exc()
            continue
        hist = model_dir.history_file.read_text()
        with (args.out / "seed_histories.csv").open("a") as fh:
            for i, line in enumerate(hist.splitlines()):
                if i == 0 and (args.out / "seed_histories.csv").stat().st_size == 0:
                    fh.write("ref," + line + "\n")
                elif i > 0:
                    fh.write(f"{ref},{line}\n")
        say(f"{ref} seed schedule done in {time.time() - t0:.0f}s: {json.dumps(summary)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
