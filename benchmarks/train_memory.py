"""Memory and speed of training input at two dataset sizes, each case in its own process.

    python benchmarks/train_memory.py [--model M6] [--size 96] [--val 100] [--workers 0]
                                      [--also-in-memory-large]

One model (M6, 96 px, one epoch from scratch, batch 40) on dfd-mini train (3,200 faces) and
on dfdc-20k train (14,000): in memory (the whole split decoded into one array, the old
path) and streamed (ensemble_dfd.data.stream). Each case runs in a fresh subprocess, so its
peak RSS (VmHWM) is its own. Targets (issue 12): peak RSS of the larger streamed case
<= 1.2x the smaller; streamed img/s >= 0.9x the in-memory path on the same data.
img/s = training images / epoch seconds (the epoch includes a --val-per-class validation
pass, the same in every case). Needs ../shared/data (skips with a message without it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
SHARED = ROOT.parent / "shared" / "data"
SETS = {"dfd-mini": SHARED / "dfd-mini", "dfdc-20k": SHARED / "dfdc-20k"}


def run_case(data: str, mode: str, args: argparse.Namespace) -> dict:
    """Train one epoch in this process; return its figures."""

    from ensemble_dfd.base_train import load_split
    from ensemble_dfd.config import load_config
    from ensemble_dfd.data.dataset import load_dataset
    from ensemble_dfd.training import memory
    from ensemble_dfd.training.modeldir import ModelDir
    from ensemble_dfd.training.plan import plan_model
    from ensemble_dfd.training.train import TrainData, train_one

    table = tomllib.loads((ROOT / "experiments" / "cpu.toml").read_text())
    table["data"].pop("image_size_per_model", None)  # one size for the one model
    table["train"].pop("per_model", None)
    table["data"].update(image_size=args.size, limit=0, limit_per_split={"validation": args.val},
                         in_memory=mode == "memory", workers=args.workers)
    table["train"].update(models=[args.model], epochs_frozen=1, epochs_finetune=0)
    plan = plan_model(load_config(None, table), args.model)
    rss0 = memory.rss_mb()
    t0 = time.perf_counter()
    df = load_dataset(SETS[data])
    xt, yt = load_split(df, plan, "train")
    xv, yv = load_split(df, plan, "validation")
    load_s = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = ModelDir(Path(tmp))
        train_one(plan, TrainData(xt, yt, xv, yv), model_dir, log=lambda _: None)
        h = model_dir.history().iloc[-1]
    return {"data": data, "mode": mode, "n_train": len(xt), "n_val": len(xv),
            "load_s": round(load_s, 1), "epoch_s": float(h["seconds"]),
            "img_per_s": float(h["images_per_second"]),
            "peak_rss_mb": memory.peak_rss_mb(), "rss_before_mb": rss0}


def run_ab(args: argparse.Namespace) -> dict:
    """Streamed vs in-memory img/s in ONE process on the same images and the same compiled
    model, alternating (best of --rounds each), so a busy machine penalises neither side."""
    import numpy as np

    from ensemble_dfd.data.dataset import load_dataset, select
    from ensemble_dfd.data.images import load_images
    from ensemble_dfd.data.stream import epoch_seed, image_split, keras_batches
    from ensemble_dfd.training import backbones
    from ensemble_dfd.training.train import compile_model

    part = select(load_dataset(SETS["dfd-mini"]), "train", args.ab_n // 2, 0)
    files, y = part["file"].tolist(), part["label"].to_numpy().astype("float32")
    x = load_images(files, args.size)
    stream = keras_batches(image_split(files, y, args.size), 40, True, 0, args.workers)
    model, _ = backbones.build_model(backbones.get(args.model), args.size, "none", 0.2, True,
                                     0.2, freeze_base=False, base_bn_training=True,
                                     bn_momentum=0.9)
    compile_model(model, "adam", 1e-3)
    model.fit(x[:80], y[:80], batch_size=40, epochs=1, verbose=0)  # trace the step once
    best = {"memory": np.inf, "stream": np.inf}
    for r in range(args.rounds):
        for side in best:
            t0 = time.perf_counter()
            if side == "memory":
                model.fit(x, y, batch_size=40, epochs=r + 1, initial_epoch=r, shuffle=True,
                          verbose=0)
            else:
                model.fit(stream, epochs=r + 1, initial_epoch=r, shuffle=False, verbose=0,
                          callbacks=[epoch_seed(stream)])
            best[side] = min(best[side], time.perf_counter() - t0)
    return {"n": len(files), **{f"{k}_img_per_s": round(len(files) / v, 2)
                                for k, v in best.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="M6")
    p.add_argument("--size", type=int, default=96)
    p.add_argument("--val", type=int, default=100, help="validation faces per class")
    p.add_argument("--workers", type=int, default=0, help="decode threads (0: all cores)")
    p.add_argument("--also-in-memory-large", action="store_true",
                   help="also run dfdc-20k in memory (what the old path needed)")
    p.add_argument("--ab-n", type=int, default=400, help="images in the same-process A/B")
    p.add_argument("--rounds", type=int, default=2, help="A/B rounds (best of)")
    p.add_argument("--ab-only", action="store_true", help="only the same-process A/B")
    p.add_argument("--case", nargs=2, metavar=("DATA", "MODE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.case:
        result = run_ab(args) if args.case[0] == "ab" else run_case(*args.case, args)
        print("RESULT " + json.dumps(result), flush=True)
        return 0
    missing = [str(v) for v in SETS.values() if not v.is_dir()]
    if missing:
        print(f"skipped: {', '.join(missing)} absent (research data, see README)")
        return 0
    cases = [("dfd-mini", "memory"), ("dfd-mini", "stream"), ("dfdc-20k", "stream")]
    if args.also_in_memory_large:
        cases.append(("dfdc-20k", "memory"))
    cases = [] if args.ab_only else cases
    passthrough = ["--model", args.model, "--size", str(args.size), "--val", str(args.val),
                   "--workers", str(args.workers), "--ab-n", str(args.ab_n),
                   "--rounds", str(args.rounds)]
    results = {}
    for data, mode in [*cases, ("ab", "ab")]:
        out = subprocess.run([sys.executable, __file__, *passthrough, "--case", data, mode],
                             capture_output=True, text=True, check=False)
        line = [s for s in out.stdout.splitlines() if s.startswith("RESULT ")]
        if out.returncode or not line:
            print(out.stdout[-2000:], out.stderr[-4000:], sep="\n")
            raise SystemExit(f"case {data} {mode} failed (rc {out.returncode})")
        results[data, mode] = r = json.loads(line[0][7:])
        if data == "ab":
            ab = r["stream_img_per_s"] / r["memory_img_per_s"]
            print(f"same process, same {r['n']} dfd-mini images, alternating, best of "
                  f"{args.rounds}: in memory {r['memory_img_per_s']:.1f} img/s, streamed "
                  f"{r['stream_img_per_s']:.1f} img/s: {ab:.2f}x (target >= 0.9x) "
                  f"{'MET' if ab >= 0.9 else 'NOT MET'}")
            continue
        print(f"{data:9s} {mode:7s} n={r['n_train']:6d}  load {r['load_s']:6.1f} s  epoch "
              f"{r['epoch_s']:7.1f} s  {r['img_per_s']:6.1f} img/s  peak RSS "
              f"{r['peak_rss_mb']:7.0f} MB", flush=True)
    if args.ab_only:
        return 0
    rss = (results["dfdc-20k", "stream"]["peak_rss_mb"]
           / results["dfd-mini", "stream"]["peak_rss_mb"])
    speed = (results["dfd-mini", "stream"]["img_per_s"]
             / results["dfd-mini", "memory"]["img_per_s"])
    print(f"peak RSS dfdc-20k / dfd-mini, streamed: {rss:.2f}x (target <= 1.2x) "
          f"{'MET' if rss <= 1.2 else 'NOT MET'}")
    print(f"streamed / in-memory img/s on dfd-mini, separate processes (one after the "
          f"other, so load changes in between count): {speed:.2f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
