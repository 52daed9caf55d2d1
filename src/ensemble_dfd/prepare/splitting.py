"""Crops -> grouped train/validation/test layout, manifest and leakage statistics."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_dfd.config import ConfigError, PrepareConfig
from ensemble_dfd.data import manifest as mf
from ensemble_dfd.data.dataset import parse_label
from ensemble_dfd.data.images import IMAGE_SUFFIXES, ImageReadError, read_rgb
from ensemble_dfd.prepare.common import (
    NEAR_THRESHOLD,
    NothingUsable,
    Problems,
    bar,
    log,
    read_csv,
    write_csv,
)
from ensemble_dfd.prepare.plan import read_index
from ensemble_dfd.runio import sha256_file


def _inspect(path: Path) -> dict[str, Any]:
    """Decode (to validate and measure), hash, and dHash one image."""
    rgb = read_rgb(path)
    return {"width": rgb.shape[1], "height": rgb.shape[0], "sha256": sha256_file(path),
            "dhash": str(mf.dhash(rgb))}


def inspect_images(files: Sequence[Path], problems: Problems, workers: int = 0,
                   ) -> list[dict[str, Any] | None]:
    """_inspect for many files (threads: OpenCV decodes without the GIL); None = unreadable."""
    from concurrent.futures import ThreadPoolExecutor

    def one(p: Path) -> dict[str, Any] | None:
        try:
            return _inspect(p)
        except (ImageReadError, OSError) as exc:
            return {"error": str(exc)}

    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        results = list(bar(pool.map(one, files), total=len(files), desc="inspect",
                           unit="img"))
    out: list[dict[str, Any] | None] = []
    for f, r in zip(files, results, strict=True):
        if r is None or "error" in r:
            problems.add(f, (r or {}).get("error", "unreadable"), "unreadable")
            out.append(None)
        else:
            out.append(r)
    return out


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard link when on one file system (no extra space), else copy."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        dst.unlink()
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def make_split(items: pd.DataFrame, out: Path, cfg: PrepareConfig, seed: int,
               problems: Problems, workers: int = 0,
               fill: Sequence[str] = mf.SPLITS) -> pd.DataFrame:
    """items: file (absolute), name, label (0/1), source, group [, video, method, split]
    -> the dataset in OUT. A ``split`` column (a dataset's official split) is kept; rows
    without one are split by group over ``fill`` (mf.keep_official_splits).

    Writes OUT/<split>/<Fake|Real>/<name> and OUT/manifest.csv (written last, atomically, so
    a dataset with a manifest is complete). Returns the manifest with a dhash column.
    """
    for name in ("train", "validation", "test"):
        shutil.rmtree(out / name, ignore_errors=True)
    (out / "manifest.csv").unlink(missing_ok=True)
    info = inspect_images([Path(f) for f in items["file"]], problems, workers)
    keep = [r is not None for r in info]
    items = items.loc[keep].reset_index(drop=True)
    info_df = pd.DataFrame([r for r in info if r is not None],
                           columns=["width", "height", "sha256", "dhash"])
    items = pd.concat([items, info_df], axis=1)
    if items.empty:
        raise NothingUsable("no readable labelled image to split")
    if "split" in items.columns:
        items["split"] = mf.keep_official_splits(
            items["group"].tolist(), items["label"].tolist(), items["split"].tolist(),
            cfg.ratios, seed, fill)
    else:
        items["split"] = mf.grouped_split(items["group"].tolist(), items["label"].tolist(),
                                          cfg.ratios, seed)
    if cfg.balance:
        before = len(items)
        items = mf.balance_classes(items, seed).reset_index(drop=True)
        log(f"balance: kept {len(items)} of {before} images")
    items["path"] = mf.layout_paths(items["name"].tolist(), items["split"].tolist(),
                                    items["label"].tolist())
    for src, rel in bar(list(zip(items["file"], items["path"], strict=True)), desc="place",
                        unit="img"):
        link_or_copy(Path(src), out / rel)
    manifest = mf.manifest_frame(items)
    write_csv(out / "manifest.csv", manifest)
    return manifest.merge(items[["path", "dhash"]], on="path")


def dataset_stats(manifest: pd.DataFrame, near_threshold: int = NEAR_THRESHOLD) -> dict[str, Any]:
    """Composition table, groups in two splits, exact and near duplicates across splits."""
    comp = mf.composition_table(manifest)
    exact = mf.exact_duplicates(manifest)
    near = mf.near_duplicates(manifest, near_threshold)
    return {"composition": comp, "groups_across_splits": mf.groups_across_splits(manifest),
            "exact": exact, "near": near}


def print_stats(stats: dict[str, Any], near_threshold: int) -> None:
    print(mf.format_composition(stats["composition"]))
    print()
    groups = stats["groups_across_splits"]
    print(f"groups in more than one split: {len(groups)}"
          + (f" ({', '.join(groups[:10])}{' ...' if len(groups) > 10 else ''})" if groups
             else ""))
    exact, near = stats["exact"], stats["near"]
    print(f"identical files across splits (sha256): {len(exact)}")
    for rec in exact.head(10).to_dict("records"):
        print(f"  {rec['splits']}: {rec['paths']}")
    print(f"near-duplicates across splits (dHash distance <= {near_threshold}): {len(near)}")
    for rec in near.head(10).to_dict("records"):
        print(f"  {rec['path_a']} ~ {rec['path_b']} (distance {rec['distance']})")
    if len(exact) == 0 and len(near) == 0 and not groups:
        print("leakage check: no cross-split duplicates")


def split_items_from_faces(faces_dir: Path, problems: Problems) -> pd.DataFrame:
    table_path = faces_dir / "faces.csv"
    if not table_path.is_file():
        raise ConfigError(f"{faces_dir}: no faces.csv (is it a `prepare faces` output?)")
    table = read_csv(table_path)
    rows = []
    for rec in table.to_dict("records"):
        if not rec["label"]:
            problems.add(faces_dir / rec["path"], "crop has no label (run faces with "
                         "--labels)", "missing label")
            continue
        rows.append({"file": str(faces_dir / rec["path"]), "name": Path(rec["path"]).name,
                     "label": parse_label(rec["label"], str(table_path)),
                     "source": rec["source"], "group": rec["group"] or rec["video"],
                     "video": rec["video"]})
    items = pd.DataFrame(rows, columns=["file", "name", "label", "source", "group", "video"])
    return with_index(items, faces_dir)


def with_index(items: pd.DataFrame, folder: Path) -> pd.DataFrame:
    """Items plus the official split and method of their video, where a dataset reader's
    index.csv lies in ``folder`` (`prepare ... --dataset`); unchanged otherwise."""
    table, _ = read_index(folder)
    if table is None:
        return items
    extra = table[["video", "split", "method"]].drop_duplicates("video")
    return items.merge(extra, on="video", how="left").fillna({"split": "", "method": ""})


def split_items_from_images(folder: Path, labels: pd.DataFrame, problems: Problems,
                            labels_file: Path) -> pd.DataFrame:
    if not folder.is_dir():
        raise ConfigError(f"{folder}: no such folder of images")
    info = {r["path"]: r for r in labels.to_dict("records")}
    rows = []
    seen = set()
    for f in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if f.resolve() == labels_file.resolve() or f.suffix.lower() == ".csv":
            continue
        rel = f.relative_to(folder).as_posix()
        if f.suffix.lower() not in IMAGE_SUFFIXES:
            problems.add(f, "not an image file (ignored)")
            continue
        rec = info.get(rel)
        if rec is None:
            problems.add(f, "image has no label in the labels CSV", "missing label")
            continue
        seen.add(rel)
        rows.append({"file": str(f), "name": f.name, "label": int(rec["label"]),
                     "source": rec["source"], "group": rec["group"] or f.stem,
                     **({"split": rec["split"]} if "split" in rec else {})})
    for rel in sorted(set(info) - seen):
        if (folder / rel).suffix.lower() in IMAGE_SUFFIXES or not (folder / rel).exists():
            problems.add(folder / rel, "listed in the labels CSV but not found")
    if rows and not labels["group"].any():
        log("split: the labels CSV has no group column: every image is its own group, so "
            "frames of one video may land in different splits")
    return pd.DataFrame(rows, columns=["file", "name", "label", "source", "group",
                                       *(["split"] if "split" in labels else [])])
