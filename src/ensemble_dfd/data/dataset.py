"""Read a dataset in the study's layout (split/Fake|Real/*.jpg) or from its manifest.csv."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from ensemble_dfd import CLASS_NAMES
from ensemble_dfd.data.images import IMAGE_SUFFIXES
from ensemble_dfd.errors import UserError

LABELS = {name.lower(): i for i, name in enumerate(CLASS_NAMES)}  # fake 0, real 1


class DatasetError(UserError, ValueError):
    """A dataset folder or manifest that cannot be used."""


def parse_label(value: object, where: str) -> int:
    """'Real'/'Fake' (any case) or 1/0 -> 1/0."""
    text = str(value).strip().lower()
    if text in LABELS:
        return LABELS[text]
    if text in ("0", "1"):
        return int(text)
    raise DatasetError(f"{where}: label {value!r} is neither Real nor Fake")


def load_dataset(location: str | Path, name: str | None = None) -> pd.DataFrame:
    """One row per image: path (``<name>/<relative path>``, the key every step joins on),
    file (absolute), split, label (1 Real, 0 Fake), source, group, and video (the source
    video's id; the group where a row has none) when the manifest has that column.

    ``location`` is a dataset folder (read via its manifest.csv if present, else by scanning
    ``<split>/<Fake|Real>/``) or a manifest CSV whose paths are relative to its folder.
    """
    location = Path(location)
    if location.is_file():
        root, manifest = location.parent, location
    elif location.is_dir():
        root, manifest = location, location / "manifest.csv"
    else:
        raise DatasetError(f"{location}: no such dataset folder or manifest")
    name = name or root.resolve().name
    df = _read_manifest(manifest, root) if manifest.is_file() else _scan(root)
    if df.empty:
        raise DatasetError(f"{location}: no images found (expected <split>/Fake|Real/*.jpg)")
    df.insert(0, "path", name + "/" + df["relpath"])
    df["file"] = [str((root / p).resolve()) for p in df["relpath"]]
    df = df.drop(columns="relpath").sort_values(["split", "path"], kind="stable")
    return df.reset_index(drop=True)


def _read_manifest(manifest: Path, root: Path) -> pd.DataFrame:
    df = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    missing = {"path", "split", "label"} - set(df.columns)
    if missing:
        raise DatasetError(f"{manifest}: missing column(s) {', '.join(sorted(missing))}")
    out = pd.DataFrame({
        "relpath": df["path"],
        "split": df["split"],
        "label": [parse_label(v, f"{manifest} row {i + 2}") for i, v in enumerate(df["label"])],
        "source": df.get("source", ""),
        "group": df["group"] if "group" in df else df["path"],
    })
    if "video" in df:  # the source video's id, where the manifest knows it
        out["video"] = df["video"].where(df["video"] != "", out["group"])
    absent = [p for p in out["relpath"] if not (root / p).is_file()]
    if absent:
        raise DatasetError(f"{manifest}: {len(absent)} listed file(s) missing, e.g. {absent[0]}")
    return out


def _scan(root: Path) -> pd.DataFrame:
    rows = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir()):
            if class_dir.name.lower() not in LABELS:
                continue
            label = LABELS[class_dir.name.lower()]
            for f in sorted(class_dir.iterdir()):
                if f.suffix.lower() in IMAGE_SUFFIXES:
                    rel = f.relative_to(root).as_posix()
                    rows.append((rel, split_dir.name, label, "", rel))
    return pd.DataFrame(rows, columns=["relpath", "split", "label", "source", "group"])


def select(df: pd.DataFrame, split: str, limit: int = 0, seed: int = 0) -> pd.DataFrame:
    """Rows of one split; with limit > 0 at most `limit` per class, drawn with `seed`."""
    part = df[df["split"] == split]
    if part.empty:
        raise DatasetError(f"split {split!r} is empty or absent (have: "
                           f"{', '.join(sorted(df['split'].unique()))})")
    if limit > 0:
        keep = [g.sample(min(len(g), limit), random_state=seed).index
                for _, g in part.groupby("label")]
        part = part.loc[[i for idx in keep for i in idx]].sort_values("path", kind="stable")
    return part.reset_index(drop=True)
