"""Datasets that ship face crops (WildDeepfake, DeepfakeBench frames): rows -> split items.

No detection: each row's images are the faces. Archived sequences are unpacked into
OUT/crops/<video>/; ``frames_per_video`` > 0 keeps that many images spread over each
sequence (all of a shorter one), as `prepare --frames-per-video` does for videos.
"""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd

from ensemble_dfd.data.images import IMAGE_SUFFIXES
from ensemble_dfd.datasets import Index, Row
from ensemble_dfd.prepare.common import Problems

ITEM_COLUMNS = ["file", "name", "label", "source", "group", "video", "split", "method",
                "original"]


def spread(n: int, k: int) -> list[int]:
    """k indices spread uniformly over n (all when k is 0 or >= n)."""
    if k <= 0 or k >= n:
        return list(range(n))
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


def unpack(archive: Path, dest: Path) -> list[str]:
    """The archive's images written under ``dest`` (flattened, safe names), by name."""
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    out = []
    with tarfile.open(archive) as tar:
        for m in sorted(tar.getmembers(), key=lambda m: m.name):
            if not m.isfile() or Path(m.name).suffix.lower() not in IMAGE_SUFFIXES:
                continue
            src = tar.extractfile(m)
            if src is None:
                continue
            target = dest / "_".join(Path(m.name).parts)  # no path from the archive is used
            target.write_bytes(src.read())
            out.append(str(target))
    return out


def row_images(row: Row, crops: Path, problems: Problems) -> list[str]:
    if row.frames:
        return list(row.frames)
    try:
        return unpack(Path(row.path), crops / row.video)
    except (OSError, tarfile.TarError) as exc:
        problems.add(row.path, f"archive unreadable: {exc}", "unreadable")
        return []


def items_from_index(index: Index, crops: Path, frames_per_video: int,
                     problems: Problems) -> pd.DataFrame:
    """Split items (file, name, label, source, group, video, split, method, original: the
    image's id in the dataset's own index) of every face image of the index's rows; names
    are ``<video>_<image stem><suffix>``."""
    rows = []
    for r in sorted(index.rows, key=lambda r: r.video):
        images = row_images(r, crops, problems)
        for i in spread(len(images), frames_per_video):
            f = Path(images[i])
            rows.append({"file": str(f), "name": f"{r.video}_{f.stem}{f.suffix.lower()}",
                         "label": r.label, "source": r.source, "group": r.group,
                         "video": r.video, "split": r.split, "method": r.method,
                         "original": r.keys[i] if r.keys else ""})
    return pd.DataFrame(rows, columns=ITEM_COLUMNS)
