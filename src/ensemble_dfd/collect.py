"""Collect every trained model's logits on labelled images into the run's logits store.

python -m ensemble_dfd.collect --run RUN_DIR --data DIR [--split NAME] [--as-split NAME]
    [--backend onnx|keras]

Each model runs from its ONNX artifact where a fresh one exists (``inference.loader``;
its logits equal Keras' within 1e-4 on real faces, tested), else from its Keras file; the log
names the backend of every model.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_dfd.cli_common import make_logger, run_main
from ensemble_dfd.data.dataset import load_dataset
from ensemble_dfd.data.images import read_rgb, stream_images
from ensemble_dfd.data.quality import image_properties
from ensemble_dfd.rundir import trained_models
from ensemble_dfd.stacking import logits as store
from ensemble_dfd.training import memory

CACHE_MB = 1024  # decoded images kept across models at one size, at most
IMAGE_COLUMNS = ["split", "path", "label", "source", "group", "width", "height"]


def image_table(rows: pd.DataFrame) -> pd.DataFrame:
    """Per-image properties (size, blur, JPEG quality...) from the original files."""
    props = [image_properties(read_rgb(f), path=f) for f in rows["file"]]
    keep = ["split", "path", "label", "source", "group"] + (["video"] if "video" in rows else [])
    table = pd.concat([rows[keep].reset_index(drop=True),
                       pd.DataFrame(props)], axis=1)
    return table.loc[:, ~table.columns.duplicated()]


def _forget_models(backend: str) -> None:
    """Drop the finished model's graph and hand freed heap back before the next model
    (Keras keeps every loaded model's graph until its session is cleared)."""
    if backend == "keras":
        import keras

        keras.backend.clear_session()
    memory.release()


def collect(run_dir: Path, data: Path, splits: list[str] | None = None,
            as_split: str | None = None, refs: list[str] | None = None,
            overwrite: bool = False, batch_size: int = 64,
            log: Callable[[str], None] = print, cache_mb: int = CACHE_MB,
            backend: str = "onnx") -> pd.DataFrame:
    """Score the chosen splits of `data` with every finished model; append to the store.

    Decoded images are kept for the next model at the same input size only while they fit
    in `cache_mb` MB (0: never); larger sets are decoded again, in batches, per model, so
    memory stays bounded whatever the dataset's size. `backend`: "onnx" runs each model's
    fresh ONNX artifact where there is one, else Keras; "keras" always Keras.
    """
    from ensemble_dfd.inference.loader import load_for_inference
    from ensemble_dfd.training.train import predict_batches

    models = trained_models(run_dir, refs)
    df = load_dataset(data)
    if splits:
        absent = [s for s in splits if s not in set(df["split"])]
        if absent:
            raise store.StoreError(f"{data}: no split(s) {', '.join(absent)}")
        df = df[df["split"].isin(splits)]
    if as_split:
        df = df.assign(split=as_split)
    df = df.sort_values(["split", "path"], kind="stable").reset_index(drop=True)
    if df["path"].duplicated().any():
        raise store.StoreError(f"{data}: duplicate image paths after --as-split")
    # fail before any inference if the results exist already
    existing = run_dir / store.LOGITS_FILE
    if existing.exists() and not overwrite:
        old = pd.read_parquet(existing, columns=["model", "split"]).drop_duplicates()
        clash = old[old["model"].isin(models) & old["split"].isin(df["split"].unique())]
        if len(clash):
            raise store.StoreError(
                f"{existing}: logits for {clash.to_dict('records')[:3]} exist; pass --overwrite")
    cache: dict[int, list[np.ndarray]] = {}
    files = df["file"].tolist()
    frames = []
    for ref, model_dir in models.items():
        model, used = load_for_inference(model_dir, backend)
        size = int(model.input_shape[1])
        if size in cache:
            z = predict_batches(model, cache[size], batch_size)
        else:  # decode while the model runs; keep the batches for later models if they fit
            keep = [] if len(files) * size * size * 3 <= cache_mb * 2**20 else None
            z = predict_batches(model, stream_images(files, size, batch_size), batch_size,
                                keep=keep)
            if keep is not None:
                cache[size] = keep
        frames.append(pd.DataFrame({"run": run_dir.name, "model": ref, "split": df["split"],
                                    "path": df["path"], "label": df["label"].astype(int),
                                    "logit": z}))
        acc = {s: float(((g["logit"] > 0) == (g["label"] == 1)).mean())
               for s, g in frames[-1].groupby("split")}
        del model
        _forget_models(used)
        log(f"collect {ref} ({used}): {len(df)} images at {size} px, accuracy "
            + ", ".join(f"{s} {a:.3f}" for s, a in acc.items())
            + f"; RSS {memory.rss_mb():.0f} MB, peak {memory.peak_rss_mb():.0f} MB")
    logits = pd.concat(frames, ignore_index=True)
    store.write_store(run_dir, logits, image_table(df), overwrite=overwrite)
    return logits


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ensemble_dfd.collect", description=__doc__)
    p.add_argument("--run", type=Path, required=True, help="run folder with models/<ref>/")
    p.add_argument("--data", type=Path, required=True, help="dataset folder or manifest.csv")
    p.add_argument("--split", action="append", help="split(s) to score (default: all)")
    p.add_argument("--as-split", help="store all scored images under this split name (e.g. wild)")
    p.add_argument("--models", help="subset of refs, e.g. M3,M7")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--overwrite", action="store_true", help="replace existing logits")
    p.add_argument("--backend", choices=("onnx", "keras"), default="onnx",
                   help="onnx: each model's ONNX artifact where one is fresh, else Keras; "
                        "keras: always Keras")
    args = p.parse_args(argv)

    def body() -> int:
        refs = [r.strip() for r in args.models.split(",")] if args.models else None
        log = make_logger(args.run / "collect.log")
        collect(args.run, args.data, args.split, args.as_split, refs, args.overwrite,
                args.batch_size, log, backend=args.backend)
        return 0

    return run_main(body)


if __name__ == "__main__":
    raise SystemExit(main())
