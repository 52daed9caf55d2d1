"""The logits store: every model's logit for every image, in one long table.

``RUN_DIR/logits.parquet``: run, model, split, path, label, logit (label 1 = Real, logit > 0
means Real). ``RUN_DIR/images.parquet``: one row per (split, path) with label, source, group,
width, height and image-quality columns. Pure pandas: no TensorFlow here.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_dfd.errors import UserError
from ensemble_dfd.runio import atomic_write

LOGITS_FILE = "logits.parquet"
IMAGES_FILE = "images.parquet"
LOGIT_COLUMNS = ["run", "model", "split", "path", "label", "logit"]


class StoreError(UserError, ValueError):
    """A logits store that is missing, inconsistent or does not match its use."""


def model_sort_key(ref: str) -> tuple[int, str]:
    """M2 before M10: refs sort by their number, other names after."""
    digits = ref[1:] if ref[:1].upper() == "M" else ""
    return (int(digits), ref) if digits.isdigit() else (10**6, ref)


def validate(df: pd.DataFrame, where: str = "logits") -> None:
    """Columns present, finite logits, 0/1 labels, one label per image, no duplicate rows,
    and within each split every model scored exactly the same images."""
    missing = set(LOGIT_COLUMNS) - set(df.columns)
    if missing:
        raise StoreError(f"{where}: missing column(s) {', '.join(sorted(missing))}")
    bad = ~np.isfinite(df["logit"].to_numpy(dtype=float))
    if bad.any():
        row = df[bad].iloc[0]
        raise StoreError(f"{where}: {int(bad.sum())} non-finite logit(s), e.g. model "
                         f"{row['model']} split {row['split']} path {row['path']}")
    if not df["label"].isin([0, 1]).all():
        raise StoreError(f"{where}: labels must be 0 (Fake) or 1 (Real)")
    dup = df.duplicated(["model", "split", "path"])
    if dup.any():
        row = df[dup].iloc[0]
        raise StoreError(f"{where}: duplicate rows, e.g. model {row['model']} split "
                         f"{row['split']} path {row['path']}")
    labels = df.groupby(["split", "path"])["label"].nunique()
    if (labels > 1).any():
        split, path = labels[labels > 1].index[0]
        raise StoreError(f"{where}: image {path} in split {split} has different labels")
    for split, part in df.groupby("split"):
        sets = {m: set(g["path"]) for m, g in part.groupby("model")}
        ref_model, ref_set = next(iter(sets.items()))
        for model, paths in sets.items():
            if paths != ref_set:
                only_a = sorted(ref_set - paths)[:3]
                only_b = sorted(paths - ref_set)[:3]
                raise StoreError(
                    f"{where}: split {split}: models {ref_model} and {model} scored different "
                    f"images ({len(ref_set ^ paths)} differ; only {ref_model}: {only_a}; "
                    f"only {model}: {only_b})"
                )


def read_store(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / LOGITS_FILE
    if not path.is_file():
        raise StoreError(f"{path}: no logits store; run `python -m ensemble_dfd.collect` first")
    df = pd.read_parquet(path)
    validate(df, str(path))
    return df


def read_images(run_dir: str | Path) -> pd.DataFrame:
    path = Path(run_dir) / IMAGES_FILE
    if not path.is_file():
        raise StoreError(f"{path}: no per-image table; run `python -m ensemble_dfd.collect`")
    return pd.read_parquet(path)


def merge(old: pd.DataFrame | None, new: pd.DataFrame, keys: list[str],
          overwrite: bool) -> pd.DataFrame:
    """Add `new` rows to `old`; rows whose keys exist already are refused unless overwrite."""
    if old is None or old.empty:
        return new.reset_index(drop=True)
    old_keys = old[keys].drop_duplicates()
    clash = new[keys].drop_duplicates().merge(old_keys, on=keys)
    if len(clash) and not overwrite:
        raise StoreError(f"already in the store: {clash.to_dict('records')[:3]} "
                         f"({len(clash)} in all); pass --overwrite to replace them")
    if len(clash):
        mask = old.set_index(keys).index.isin(clash.set_index(keys).index)
        old = old[~mask]
    return pd.concat([old, new], ignore_index=True)


def write_store(run_dir: str | Path, logits: pd.DataFrame, images: pd.DataFrame | None,
                overwrite: bool = False) -> pd.DataFrame:
    """Append logits (and per-image rows) to the run's store, validating the result first."""
    run_dir = Path(run_dir)
    path = run_dir / LOGITS_FILE
    old = pd.read_parquet(path) if path.is_file() else None
    combined = merge(old, logits[LOGIT_COLUMNS], ["model", "split"], overwrite)
    combined = sort_store(combined)
    validate(combined, str(path))
    atomic_write(path, lambda p: combined.to_parquet(p, index=False))
    if images is not None:
        ipath = run_dir / IMAGES_FILE
        iold = pd.read_parquet(ipath) if ipath.is_file() else None
        keys = ["split", "path"]
        if iold is not None:
            iold = iold.merge(images[keys], on=keys, how="left", indicator=True)
            iold = iold[iold["_merge"] == "left_only"].drop(columns="_merge")
        allimg = merge(iold, images, keys, overwrite=True)
        if "video" in allimg and "group" in allimg:  # splits whose manifest had no video id
            allimg["video"] = allimg["video"].fillna(allimg["group"])
        allimg = allimg.sort_values(keys, kind="stable").reset_index(drop=True)
        atomic_write(ipath, lambda p: allimg.to_parquet(p, index=False))
    return combined


def sort_store(df: pd.DataFrame) -> pd.DataFrame:
    """Deterministic order: split, model (M1..M10), path."""
    order = df["model"].map(model_sort_key)
    return (df.assign(_m=order).sort_values(["split", "_m", "path"], kind="stable")
            .drop(columns="_m").reset_index(drop=True))


@dataclass(frozen=True)
class LogitMatrix:
    """One split as an (n_images x n_models) matrix, rows in path order."""

    X: np.ndarray
    y: np.ndarray
    paths: np.ndarray
    models: list[str]


def logit_matrix(df: pd.DataFrame, split: str, models: list[str] | None = None) -> LogitMatrix:
    part = df[df["split"] == split]
    if part.empty:
        raise StoreError(f"split {split!r} is not in the store (have: "
                         f"{', '.join(sorted(df['split'].unique()))})")
    have = sorted(part["model"].unique(), key=model_sort_key)
    models = list(models) if models is not None else have
    absent = [m for m in models if m not in have]
    if absent:
        raise StoreError(f"split {split!r}: no logits for model(s) {', '.join(absent)}")
    wide = part.pivot(index="path", columns="model", values="logit")[models]
    if wide.isna().any().any():
        raise StoreError(f"split {split!r}: models scored different images")
    labels = part.drop_duplicates("path").set_index("path")["label"].reindex(wide.index)
    return LogitMatrix(wide.to_numpy(dtype=np.float64), labels.to_numpy(dtype=np.int64),
                       wide.index.to_numpy(), models)
