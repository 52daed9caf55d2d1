"""Training and inference speed per model and Keras backend, against a plain PyTorch loop.

    python benchmarks/train_speed.py [--backends jax,tensorflow,torch] [--models M6]
        [--size 64] [--n 200] [--data DIR] [--epochs 3,2] [--tiny] [--gpu] [--budget-s S]

Each backend runs in its own subprocess (KERAS_BACKEND is fixed per process). Per model it
trains through the real `train.train_one` (in-memory uint8 tensors, the run's config, the
study's flip + rotation 0.2) and prints:
- compile: seconds the first step of phase 1 / phase 2 / inference cost beyond a steady step;
- steady images/s of the phase-1 step, the phase-2 step and inference (`predict_batches`);
- epoch 1 / steady epoch (history.csv, validation and checkpoint included);
- aug: the augmentation's share of the phase-1 step (a model of only the augmentation,
  trained on the same batches, minus the same model without it);
- torch: a plain PyTorch loop on the same architecture (torchvision where installed, else the
  MobileNetV2 defined in benchmarks/torch_reference.py), same device, batch, size and flips,
  timed in the same process, and keras / torch ratios.

Modes: default = the CPU profile of issue 11 (M6 at 64 px, 200 faces per class of
../shared/data/dfd-mini, experiments/cpu.toml, 3 + 2 epochs); --tiny = CI-sized (synthetic
uint8, 32 px, 1 + 1 epochs); --gpu = experiments/gpu.toml at the study's sizes on a subset of
faces, for one accelerator run of at most --budget-s seconds (models after the budget are
skipped, and said so).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))
SHARED = ROOT.parent / "shared" / "data" / "dfd-mini"
ALL = ["M6", "M2", "M4", "M9", "M1", "M7", "M3", "M8", "M5", "M10"]  # cheapest first
MARK = "RESULT "


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--backends", default="jax,tensorflow",
                   help="comma-separated Keras backends, each run in its own subprocess")
    p.add_argument("--models", default="", help="refs (default M6; --gpu: all ten)")
    p.add_argument("--size", type=int, default=0, help="input px (0: the config's size)")
    p.add_argument("--n", type=int, default=0, help="training faces per class")
    p.add_argument("--data", type=Path, help="dataset folder (default ../shared/data/dfd-mini)")
    p.add_argument("--config", type=Path, help="default experiments/cpu.toml (--gpu: gpu.toml)")
    p.add_argument("--epochs", default="", help="phase-1,phase-2 epochs (default 3,2)")
    p.add_argument("--batch", type=int, default=0, help="batch size (default: the config's)")
    p.add_argument("--tiny", action="store_true", help="CI-sized: synthetic data, 32 px")
    p.add_argument("--gpu", action="store_true", help="study sizes, experiments/gpu.toml")
    p.add_argument("--no-reference", action="store_true", help="skip the PyTorch reference")
    p.add_argument("--budget-s", type=float, default=0, help="start no model after S seconds")
    p.add_argument("--json", type=Path,
                   help="also write the results here (JSON lines, each as soon as measured)")
    p.add_argument("--rerun", action="store_true",
                   help="run each backend twice on one JAX compilation cache: the second "
                        "run's compile columns are what a rerun or resumed run pays")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = ({"models": ",".join(ALL), "n": 320, "epochs": "2,2", "config": "gpu.toml"}
                if args.gpu else
                {"models": "M6", "n": 32, "epochs": "2,1", "config": "cpu.toml", "size": 32,
                 "batch": 16}
                if args.tiny else
                {"models": "M6", "n": 200, "epochs": "3,2", "config": "cpu.toml", "size": 64})
    for key, value in defaults.items():
        if not getattr(args, key):
            setattr(args, key, ROOT / "experiments" / value if key == "config" else value)
    if args.data is None and not args.tiny:
        args.data = SHARED if SHARED.exists() else None
    return args


# --------------------------------------------------------------------------- worker side

def load_data(args: argparse.Namespace, size: int) -> Any:
    """In-memory uint8 train/validation tensors: real faces, or synthetic ones."""
    from ensemble_dfd.training.train import TrainData

    if args.data is None:
        rng = np.random.default_rng(0)
        n = 2 * args.n
        x = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
        y = np.tile([0, 1], n // 2)
        return TrainData(x, y, x[: max(8, n // 4)], y[: max(8, n // 4)])
    from ensemble_dfd.data.dataset import load_dataset, select
    from ensemble_dfd.data.images import load_images

    df = load_dataset(args.data)
    tr = select(df, "train", args.n, 0)
    va = select(df, "validation", max(8, args.n // 4), 0)
    return TrainData(load_images(tr["file"].tolist(), size), tr["label"].to_numpy(),
                     load_images(va["file"].tolist(), size), va["label"].to_numpy())


def step_timer() -> Any:
    """A callback that records each training step's end, synchronised on its loss."""
    import keras

    class StepTimer(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.steps: list[tuple[int, float, float]] = []  # (epoch, begin, end)

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.epoch = epoch

        def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
            self.t0 = time.perf_counter()

        def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
            if logs and "loss" in logs:
                keras.ops.convert_to_numpy(logs["loss"])
            self.steps.append((self.epoch, self.t0, time.perf_counter()))

    return StepTimer()


def step_stats(steps: list[tuple[int, float, float]], epochs: range) -> tuple[float, float]:
    """(first step seconds, median steady step seconds) over the given epochs."""
    sel = [s for s in steps if s[0] in epochs]
    first = sel[0][2] - sel[0][1]
    later = [b[2] - a[2] for a, b in zip(sel, sel[1:], strict=False) if a[0] == b[0]]
    return first, float(np.median(later)) if later else first


def time_inference(model: Any, x: np.ndarray, batch: int, rounds: int = 3) -> tuple[float, float]:
    """(first-batch compile seconds beyond a steady batch, steady images/s) of predict_batches."""
    from ensemble_dfd.training.train import predict_batches

    batch = min(batch, len(x))
    x = x[: len(x) // batch * batch]
    t0 = time.perf_counter()
    predict_batches(model, [x[:batch]], batch)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(rounds):
        predict_batches(model, (x[i:i + batch] for i in range(0, len(x), batch)), batch)
    per_batch = (time.perf_counter() - t0) / (rounds * (len(x) // batch))
    return max(0.0, first - per_batch), batch / per_batch


def aug_seconds(x: np.ndarray, y: np.ndarray, batch: int, steps: int = 8) -> float:
    """Seconds per training step the augmentation adds: Input -> [augment] -> pool -> Dense,
    trained with and without it on the same batches (the difference is the augmentation)."""
    import keras

    from ensemble_dfd.training.augment import augment_layer
    from ensemble_dfd.training.train import compile_model

    out = {}
    for aug in (True, False):
        inputs = keras.Input(x.shape[1:])
        h = augment_layer()(True, 0.2)(inputs) if aug else keras.ops.cast(inputs, "float32")
        h = keras.layers.GlobalAveragePooling2D()(h)
        model = keras.Model(inputs, keras.layers.Dense(1)(h))
        compile_model(model, "adam", 1e-3)
        xx = np.concatenate([x[:batch]] * steps)
        yy = np.concatenate([y[:batch]] * steps).astype("float32")
        model.fit(xx[: 2 * batch], yy[: 2 * batch], batch_size=batch, verbose=0)
        timer = step_timer()
        model.fit(xx, yy, batch_size=batch, verbose=0, shuffle=False, callbacks=[timer])
        out[aug] = step_stats(timer.steps, range(0, 1))[1]
    return max(0.0, out[True] - out[False])


def measure(ref: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Everything printed for one model under this process's backend."""
    import keras

    from ensemble_dfd.config import load_config
    from ensemble_dfd.training.modeldir import ModelDir
    from ensemble_dfd.training.plan import plan_model
    from ensemble_dfd.training.train import load_model, train_one

    e1, e2 = (int(v) for v in args.epochs.split(","))
    cfg = load_config(args.config, {"train": {"models": [ref]}})
    # the benchmark's own epochs and sizes, whatever the config's per-model settings say
    cfg = replace(cfg, train=replace(cfg.train, epochs_frozen=e1, epochs_finetune=e2,
                                     per_model={}),
                  data=replace(cfg.data, batch_size=args.batch or cfg.data.batch_size))
    if args.size:
        cfg = replace(cfg, data=replace(cfg.data, image_size=args.size, image_size_per_model={}))
    plan = plan_model(cfg, ref)
    bb, size, batch = plan.backbone, plan.image_size, plan.batch_size
    data = load_data(args, size)
    timer = step_timer()
    t0 = time.perf_counter()
    model_dir = ModelDir(tmp / ref)
    train_one(plan, data, model_dir, log=lambda _m: None, callbacks=[timer])
    wall = time.perf_counter() - t0
    first1, step1 = step_stats(timer.steps, range(0, e1))
    first2, step2 = step_stats(timer.steps, range(e1, e1 + e2))
    hist = model_dir.history()
    steady_epoch = float(hist["seconds"].iloc[1:].median()) if len(hist) > 1 else np.nan
    keras.backend.clear_session()
    model = load_model(model_dir.model_file)
    compile_inf, inf_rate = time_inference(model, data.x_val, batch)
    aug = aug_seconds(data.x_train, data.y_train, batch)
    row = {"backend": keras.backend.backend(), "ref": ref, "backbone": bb.name, "size": size,
           "batch": batch, "n_train": len(data.x_train), "train_wall_s": round(wall, 1),
           "compile1_s": round(first1 - step1, 2), "compile2_s": round(first2 - step2, 2),
           "compile_inf_s": round(compile_inf, 2), "phase1_img_s": round(batch / step1, 1),
           "phase2_img_s": round(batch / step2, 1), "infer_img_s": round(inf_rate, 1),
           "epoch1_over_steady": round(float(hist["seconds"].iloc[0]) / steady_epoch, 2),
           "aug_share": round(aug / step1, 3)}
    if not args.no_reference:
        from torch_reference import reference

        row.update(reference(bb.name, size, batch, data.x_train, data.y_train))
        for key in ("phase2", "infer"):
            ref_rate = row.get(f"torch_{'train' if key == 'phase2' else 'infer'}_img_s")
            if ref_rate:
                row[f"{key}_vs_torch"] = round(row[f"{key}_img_s"] / ref_rate, 2)
    return row


def worker(args: argparse.Namespace) -> int:
    from ensemble_dfd.training import accel

    accel.enable_compile_cache()
    accel.set_precision("auto")
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for ref in args.models.split(","):
            if args.budget_s and time.perf_counter() - t_start > args.budget_s:
                print(MARK + json.dumps({"ref": ref, "skipped": "time budget spent"}), flush=True)
                continue
            try:
                row = measure(ref, args, Path(tmp))
            except Exception as exc:  # one model's failure must not lose the others
                traceback.print_exc()
                row = {"ref": ref, "error": f"{type(exc).__name__}: {exc}"[:300]}
            print(MARK + json.dumps(row), flush=True)
    return 0


# --------------------------------------------------------------------------- parent side

COLUMNS = [("backend", 10), ("ref", 4), ("size", 4), ("compile1_s", 10), ("compile2_s", 10),
           ("compile_inf_s", 13), ("phase1_img_s", 12), ("phase2_img_s", 12),
           ("infer_img_s", 11), ("epoch1_over_steady", 18), ("aug_share", 9),
           ("torch_train_img_s", 17), ("phase2_vs_torch", 15), ("infer_vs_torch", 14)]


def run_backend(backend: str, argv: list[str], sink: Path | None,
                label: str = "") -> list[dict[str, Any]]:
    """Run one backend's worker; each model's row is printed (and appended to `sink`) as soon
    as it arrives, so a run stopped by a time limit keeps what it measured."""
    env = {**os.environ, "KERAS_BACKEND": backend, "TF_CPP_MIN_LOG_LEVEL": "2"}
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen([sys.executable, __file__, "--worker", *argv], env=env,
                                stdout=subprocess.PIPE, stderr=err, text=True)
        for line in proc.stdout or []:
            if line.startswith(MARK):
                row = {**json.loads(line[len(MARK):]), "backend": label or backend}
                print(line.rstrip(), flush=True)
                if sink:
                    with sink.open("a") as fh:
                        fh.write(json.dumps(row) + "\n")
                rows.append(row)
        proc.wait()
        err.seek(0)
        tail = err.read().strip()[-600:]
    if proc.returncode != 0 or not rows:
        rows.append({"backend": label or backend,
                     "error": f"worker exit {proc.returncode}: {tail}"})
    return rows


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.worker:
        return worker(args)
    rows = []
    if args.json:
        args.json.write_text("")
    with tempfile.TemporaryDirectory() as cache:  # a cold cache: compile times as a first run
        os.environ["ENSEMBLE_DFD_COMPILE_CACHE"] = cache
        for backend in args.backends.split(","):
            for attempt in ("first", "rerun") if args.rerun else ("first",):
                label = f"{backend}{'*' * (attempt == 'rerun')}"
                rows += run_backend(backend, [a for a in argv if a != "--worker"], args.json,
                                    label)
    print(f"data {args.data or 'synthetic'}, config {args.config.name}, epochs {args.epochs}, "
          f"{os.cpu_count()} cores")
    print("  ".join(f"{name:>{w}}" for name, w in COLUMNS))
    if args.rerun:
        print("(backend*: the same run again, on the compilation cache the first one left)")
    for row in rows:
        if "error" in row or "skipped" in row:
            print(f"{row.get('backend', ''):>10}  {row.get('ref', '')}: "
                  f"{row.get('error') or row.get('skipped')}")
            continue
        print("  ".join(f"{str(row.get(name, '-')):>{w}}" for name, w in COLUMNS))
    for row in rows:
        if row.get("torch_note"):
            print(f"torch reference for {row['ref']}: {row['torch_note']}")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
