"""Train the base models M1..M10 as the 2021 study did, then collect their logits.

python -m ensemble_dfd.base_train --data DATASET_DIR --out RUN_DIR [--config FILE]
    [--models M6,M8] [--image-size S] [--epochs-frozen N] [--epochs-finetune N]
    [--weights imagenet|none|DIR] [--limit N] [--tune] [--no-collect]
    [--dask-workers N | --scheduler ADDRESS] [--gpus-per-model K]

Finished models are skipped and interrupted ones resume, so the same command can be rerun,
and different --models can be trained on different machines into copies of one run folder
whose models/<ref>/ folders are then merged. With --dask-workers/--scheduler each model is
one task on a Dask cluster (ensemble_dfd.training.cluster).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import multiprocessing
import os
import signal
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pandas as pd

from ensemble_dfd.cli_common import (
    add_config_args,
    make_logger,
    record_config,
    resolve_config,
    run_main,
)
from ensemble_dfd.config import DataConfig, RunConfig
from ensemble_dfd.data.dataset import load_dataset, select
from ensemble_dfd.data.images import load_images
from ensemble_dfd.data.stream import ImageSplit, image_split
from ensemble_dfd.prepare.recipe import run_config_for
from ensemble_dfd.reports.training import accuracy_table, markdown, plot_curves
from ensemble_dfd.runio import environment, write_json, write_text
from ensemble_dfd.training import backbones, memory
from ensemble_dfd.training.cluster import ClusterTarget, add_cluster_args, target_from_args
from ensemble_dfd.training.modeldir import ModelDir
from ensemble_dfd.training.plan import ModelPlan, plan_models
from ensemble_dfd.training.tracking import TB_DIR, ModelTracker, prepare_tracking


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.base_train", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True, help="dataset folder (split/Fake|Real)")
    p.add_argument("--out", type=Path, required=True, help="run folder")
    add_config_args(p)
    p.add_argument("--models", help="refs to train, e.g. M6,M8 (default: the config's)")
    p.add_argument("--image-size", type=int)
    p.add_argument("--epochs-frozen", type=int)
    p.add_argument("--epochs-finetune", type=int)
    p.add_argument("--weights", help="imagenet | none | DIR of Keras notop .h5 files")
    p.add_argument("--limit", type=int, help="at most N images per split and class")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--mixed-precision", choices=["auto", "on", "off", "bf16"])
    p.add_argument("--tune", action="store_true", help="keras-tuner search before training")
    p.add_argument("--no-collect", action="store_true", help="skip logit collection")
    p.add_argument("--overwrite", action="store_true",
                   help="retrain models that finished and replace their logits")
    add_cluster_args(p)
    return p


def config_flags(args: argparse.Namespace) -> dict[str, object]:
    """The dedicated flags as config keys; a typed one beats the file, --set and the file's
    per-model values (see `cli_common.resolve_config`)."""
    return {"train.models": args.models, "data.image_size": args.image_size,
            "train.epochs_frozen": args.epochs_frozen,
            "train.epochs_finetune": args.epochs_finetune, "train.weights": args.weights,
            "data.limit": args.limit, "data.batch_size": args.batch_size,
            "train.mixed_precision": args.mixed_precision}


def split_rows(df: pd.DataFrame, data: DataConfig, seed: int, split: str) -> pd.DataFrame:
    """The rows of one split that the run uses (its per-split limit, seeded)."""
    return select(df, split, data.limit_per_split.get(split, data.limit), seed)


def load_split(df: pd.DataFrame, plan: ModelPlan, split: str,
               cache: dict | None = None) -> tuple:
    """(images, labels) of one split at the planned model's input size.

    By default the images stay on disk: an ImageSplit that training streams in shuffled,
    prefetched uint8 batches, so memory does not grow with the dataset. With
    ``data.in_memory`` they are decoded once per process into one uint8 array, kept in
    `cache` for the next model at the same size.
    """
    part = split_rows(df, plan.data, plan.seed, split)
    labels = part["label"].to_numpy()
    size = plan.image_size
    if not plan.data.in_memory:
        return image_split(part["file"].tolist(), labels, size), labels
    cache = {} if cache is None else cache
    key = (split, size)
    if key not in cache:
        cache[key] = (load_images(part["file"].tolist(), size, plan.data.workers), labels)
    return cache[key]


def decoded(data):
    """The same TrainData with streamed ImageSplits decoded into arrays (for the tuner)."""
    from ensemble_dfd.training.train import TrainData

    def arr(x):
        return load_images(list(x.files), x.size) if isinstance(x, ImageSplit) else x

    return TrainData(arr(data.x_train), data.y_train, arr(data.x_val), data.y_val)


def record_memory(model_dir: ModelDir, summary: dict, log=print) -> dict:
    """Add this model's peak and final RSS to its finished record (when it trained here)."""
    peak, now, malloc = memory.peak_rss_mb(), memory.rss_mb(), memory.allocator_in_use()
    log(f"{summary.get('ref', model_dir.ref)} memory: peak RSS {peak:.0f} MB while "
        f"training, {now:.0f} MB after ({malloc} malloc)")
    if "peak_rss_mb" not in summary:
        summary = model_dir.update_summary(peak_rss_mb=peak, rss_mb_after=now,
                                           allocator=malloc)
    return summary


def export_trained(plan: ModelPlan, data: Path, run_dir: Path, log=print,
                   process: str = "own") -> dict:
    """The finished model's ONNX artifact beside it (unless a fresh one exists), checked on
    its validation faces; the export's peak RSS and its `process` ("own", or "training":
    the one that trained the model) go to its record.
    Runs in a process of its own by default: after training, the trainer's heap would
    carry over (ResNet152V2: 6.2 GB exporting there vs 3.4 GB training)."""
    from ensemble_dfd.artifacts import export_after_training, spread_faces

    model_dir = ModelDir.of(run_dir, plan.ref)
    if not model_dir.needs_export():
        return model_dir.summary()
    memory.release()
    memory.reset_peak()
    rows = split_rows(load_dataset(data), plan.data, plan.seed, plan.data.validation_split)
    if export_after_training(model_dir, log, spread_faces(rows["file"].tolist())) is not None:
        return model_dir.update_summary(export_peak_rss_mb=memory.peak_rss_mb(),
                                        export_allocator=memory.allocator_in_use(),
                                        export_process=process)
    return model_dir.summary()


def train_model(plan: ModelPlan, data: Path, run_dir: Path, overwrite: bool = False,
                tune: bool = False, log=print, cache: dict | None = None) -> dict:
    """Train (or resume, or skip when finished) one planned model into
    its ModelDir; return its summary (the finished record). Runs in the process that trains
    (a spawned child by default), so the per-process set-up (JAX's compilation cache)
    happens here."""
    from ensemble_dfd.training import accel
    from ensemble_dfd.training.train import TrainData, train_one

    model_dir = ModelDir.of(run_dir, plan.ref)
    if not model_dir.begin(overwrite):
        log(f"{plan.ref}: finished earlier, skipping ({model_dir.done_file})")
        return model_dir.summary()
    accel.enable_compile_cache()  # JAX: a rerun or resumed run does not compile again
    memory.release()
    memory.reset_peak()
    log(f"{plan.ref}: RSS {memory.rss_mb():.0f} MB before loading its data")
    df = load_dataset(data)
    xt, yt = load_split(df, plan, plan.data.train_split, cache)
    xv, yv = load_split(df, plan, plan.data.validation_split, cache)
    arrays = TrainData(xt, yt, xv, yv)
    if tune:
        from ensemble_dfd.training.tune import tune_model

        plan = plan.tuned(tune_model(plan, decoded(arrays), model_dir, log))
    log(f"{plan.ref} {plan.name}: {len(xt)} train / {len(xv)} validation images at "
        f"{plan.image_size} px")
    tracker = ModelTracker(run_dir / TB_DIR, plan.ref, plan.train.tracking, log)
    summary = record_memory(model_dir, train_one(plan, arrays, model_dir, log,
                                                 tracker=tracker), log)
    history = model_dir.history()
    plot_curves(history, model_dir.curves_file, f"{plan.ref} {plan.name}")
    h = history.iloc[-1]
    log(f"{plan.ref} done: train acc {h['accuracy']:.4f}, val acc {h['val_accuracy']:.4f}")
    return summary


def _die_with_parent(parent: int) -> None:
    """Linux: have the kernel kill this process when its parent dies (a killed base_train
    must not leave a model training on in the background); elsewhere a no-op."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").prctl(1, signal.SIGKILL)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def _train_in_child(plan: ModelPlan, data: Path, run_dir: Path, overwrite: bool,
                    tune: bool, parent: int) -> dict:
    """train_model in a fresh process (spawned): its memory all goes back when it exits;
    with ``train.export_apart = false`` the model's export too."""
    from ensemble_dfd.training import accel

    _die_with_parent(parent)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    accel.set_precision(plan.train.mixed_precision)
    log = make_logger(run_dir / "base_train.log")
    summary = train_model(plan, data, run_dir, overwrite, tune, log)
    if plan.train.export == "onnx" and not plan.train.export_apart:
        import keras  # the export reloads the model from its file

        keras.backend.clear_session()
        summary = export_trained(plan, data, run_dir, log, "training")  # then found fresh
    return summary


def _export_in_child(plan: ModelPlan, data: Path, run_dir: Path, parent: int) -> dict:
    """export_trained in a fresh process (spawned), as training is."""
    _die_with_parent(parent)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return export_trained(plan, data, run_dir, make_logger(run_dir / "base_train.log"))


def _in_child(fn, *args, malloc: str | None = None):
    """fn(*args, os.getpid()) in a fresh spawned process, with the `malloc` library
    preloaded where given; its memory all goes back after."""
    with memory.preloaded(malloc), ProcessPoolExecutor(
            max_workers=1, mp_context=multiprocessing.get_context("spawn")) as child:
        return child.submit(fn, *args, os.getpid()).result()


def record_device(cfg: RunConfig, run_dir: Path, plans: list[ModelPlan], log=print) -> None:
    """Set the process-wide switches (oneDNN, precision) and record the device in env.json."""
    from ensemble_dfd.training import accel

    late = accel.set_onednn(cfg.train.onednn)  # before TensorFlow loads, here and in children
    if late:
        log(f"warning: {late}")
    policy = accel.set_precision(cfg.train.mixed_precision)
    device = accel.describe()
    write_json(run_dir / "env.json", environment({**device, "dtype_policy": policy,
                                                  "onednn": cfg.train.onednn}))
    log(f"device {device['device']} ({device['keras_backend']}), policy {policy}, "
        f"models {','.join(p.ref for p in plans)}")


def check_weights(plans: list[ModelPlan]) -> None:
    """Each model's pretrained weights load (fail at once, not after hours of training)."""
    for plan in plans:
        if plan.train.weights.lower() != "none":
            backbones.build_base(plan.backbone, plan.image_size, plan.train.weights)


def train_all(cfg: RunConfig, data: Path, run_dir: Path, overwrite: bool = False,
              tune: bool = False, log=print,
              cluster: ClusterTarget | None = None) -> dict[str, dict]:
    """Train every configured model (skipping finished ones); return their summaries.

    With ``train.process_per_model`` (the default) each model trains in its own spawned
    process. In one process, memory grew from model to model although each one's graph
    was cleared (TensorFlow keeps allocator and runtime caches; the ten-model CPU profile
    peaked at 13.3 GB): a child's memory is all returned when it exits, so the run's
    peak is that of its largest model. With a `cluster`, each model is one Dask task
    (training.cluster), trained in a child process on its worker.
    """
    plans = plan_models(cfg)
    prepare_tracking(run_dir, {t for p in plans for t in p.train.tracking})
    record_device(cfg, run_dir, plans, log)
    check_weights(plans)
    if cluster is not None:
        from ensemble_dfd.training.cluster import train_on_cluster

        return train_on_cluster(plans, data, run_dir, overwrite, tune, cluster, log)
    if not cfg.train.process_per_model:
        return _train_here(plans, data, run_dir, overwrite, tune, log)
    # each training child's malloc (train.allocator, per model); a missing one fails here
    malloc = {p.ref: memory.allocator_library(p.allocator) for p in plans}
    summaries = {}
    for plan in plans:
        model_dir = ModelDir.of(run_dir, plan.ref)
        if model_dir.finished() and not overwrite:  # no child (and no TensorFlow import)
            log(f"{plan.ref}: finished earlier, skipping ({model_dir.done_file})")
            summaries[plan.ref] = model_dir.summary()
        else:
            summaries[plan.ref] = _in_child(_train_in_child, plan, data, run_dir, overwrite,
                                            tune, malloc=malloc[plan.ref])
        if plan.train.export == "onnx" and model_dir.needs_export():
            # the system's malloc: jemalloc raised EfficientNetB7's export peak (4,169 vs
            # 3,896 MiB)
            summaries[plan.ref] = _in_child(_export_in_child, plan, data, run_dir)
    return summaries


def _train_here(plans: list[ModelPlan], data: Path, run_dir: Path, overwrite: bool,
                tune: bool, log=print) -> dict[str, dict]:
    """train_all in this process (``train.process_per_model = false``)."""
    cache: dict = {}
    summaries = {}
    for plan in plans:
        summaries[plan.ref] = train_model(plan, data, run_dir, overwrite, tune, log, cache)
        import keras

        keras.backend.clear_session()
        memory.release()
        if plan.train.export == "onnx":
            summaries[plan.ref] = export_trained(plan, data, run_dir, log, "training")
    return summaries


def uncollected(run_dir: Path, refs: list[str], splits: list[str],
                overwrite: bool) -> list[str]:
    """Models whose logits on `splits` are not all in the store yet (all, with overwrite)."""
    from ensemble_dfd.stacking.logits import LOGITS_FILE

    path = run_dir / LOGITS_FILE
    if overwrite or not path.exists():
        return refs
    have = pd.read_parquet(path, columns=["model", "split"]).drop_duplicates()
    done = {m for m, g in have.groupby("model") if set(splits) <= set(g["split"])}
    return [r for r in refs if r not in done]


def write_summary(run_dir: Path) -> pd.DataFrame:
    """summary.csv/.md: the study's accuracy table for every finished model in the run."""
    from ensemble_dfd.stacking.logits import LOGITS_FILE, model_sort_key

    histories = {m.ref: m.history() for m in ModelDir.all_in(run_dir)
                 if m.finished() and m.has_history()}
    histories = dict(sorted(histories.items(), key=lambda kv: model_sort_key(kv[0])))
    test_acc = {}
    store = run_dir / LOGITS_FILE
    if store.exists():
        lg = pd.read_parquet(store)
        for ref, g in lg[lg["split"] == "test"].groupby("model"):
            test_acc[ref] = float(((g["logit"] > 0) == (g["label"] == 1)).mean())
    table = accuracy_table(histories, test_acc)
    table = table.merge(pd.DataFrame([{"ref": r, "backbone": backbones.get(r).name}
                                      for r in table["ref"] if r in backbones.BACKBONES]),
                        on="ref", how="left")
    write_text(run_dir / "summary.csv", table.to_csv(index=False))
    write_text(run_dir / "summary.md", markdown(table))
    return table


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)

    def body() -> int:
        cfg = resolve_config(args, config_flags(args))
        cluster = target_from_args(args)
        cfg, took = run_config_for(args.data, cfg)  # crop new media like the training faces
        args.out.mkdir(parents=True, exist_ok=True)
        record_config(args.out, cfg, args.overwrite)
        log = make_logger(args.out / "base_train.log")
        if took:
            log(took)
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        train_all(cfg, args.data, args.out, args.overwrite, args.tune or cfg.train.tune, log,
                  cluster)
        if not args.no_collect:
            from ensemble_dfd.collect import collect

            refs = uncollected(args.out, [p.ref for p in plan_models(cfg)],
                               list(cfg.data.eval_splits), args.overwrite)
            if refs:
                collect(args.out, args.data, list(cfg.data.eval_splits), None, refs,
                        overwrite=args.overwrite, log=log)
            else:
                log("logits of every model on " + ", ".join(cfg.data.eval_splits)
                    + " are in the store already")
        table = write_summary(args.out)
        log("summary:\n" + markdown(table))
        return 0

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
