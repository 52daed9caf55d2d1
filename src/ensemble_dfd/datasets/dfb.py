"""DeepfakeBench's dataset JSON (preprocessing/rearrange.py) and its processed frame tree.

    {dataset: {label: {split: {[comp:] {video: {"label": label, "frames": [paths]}}}}}}

``split`` is train/val/test; FaceForensics++ files have a compression level (c23, ...)
between split and video. A label name with 'real' in it (FF-real, CelebDFv2_real,
DFDCP_Real, ...) is Real (DeepfakeBench: real = 0, fake = 1; here Real = 1); any other is
Fake and names the method (FF-DF -> Deepfakes ...). Frames are the face crops
DeepfakeBench's preprocessing wrote; relative paths are read under ROOT. A video listed in
several splits (DeepfakeBench lists Celeb-DF's test videos under val too) is kept in the
most protected one (test > validation > train).
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from ensemble_dfd.datasets.base import (
    Index,
    LayoutError,
    Missing,
    Options,
    Row,
    settle_groups,
)

SPLITS = {"train": "train", "val": "validation", "validation": "validation", "test": "test"}
FF_METHODS = {"FF-DF": "Deepfakes", "FF-F2F": "Face2Face", "FF-FS": "FaceSwap",
              "FF-NT": "NeuralTextures", "FF-FH": "FaceShifter"}
DATASETS = {"FaceForensics++": "ffpp", "DeepFakeDetection": "dfd", "Celeb-DF-v2": "celebdf",
            "DFDC": "dfdc", "DFDCP": "dfdcp"}
COMPRESSIONS = ("raw", "c23", "c40")


def is_real(label: str) -> bool:
    return "real" in label.lower()


def method_of(label: str) -> str:
    return FF_METHODS.get(label, label)


def load_index(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise LayoutError(f"{path}: no such DeepfakeBench index JSON")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path}: not a readable JSON ({exc})") from None
    if not isinstance(data, dict) or not data or not all(
            isinstance(v, dict) for v in data.values()):
        raise LayoutError(f"{path}: not a DeepfakeBench dataset JSON (expected "
                          "{dataset: {label: {split: {[comp:] {video: {label, frames}}}}}})")
    return data


def _videos(tree: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(compression, video, entry) under one split, with or without a compression level."""
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and "frames" in value:
            out.append(("", key, value))
        elif key in COMPRESSIONS and isinstance(value, dict):
            out += [(key, v, e) for v, e in value.items() if isinstance(e, dict)]
    return out


# the dataset folders of DeepfakeBench's frame tree (its JSONs' paths start at one of them)
FOLDERS = ("FaceForensics++", "Celeb-DF-v1", "Celeb-DF-v2", "DFDCP", "DFDC",
           "DeepFakeDetection", "FaceShifter", "UADFV", "DeeperForensics-1.0")


def frame_key(text: str) -> str:
    """A frame's id across machines: its path from the dataset folder on
    (``FaceForensics++/original_sequences/.../000.png``), whatever prefix (an absolute
    rgb_dir, ``./``, backslashes) the index or the test output put before it."""
    parts = PurePosixPath(text.replace("\\", "/")).parts
    for i, part in enumerate(parts):
        if part in FOLDERS:
            return "/".join(parts[i:])
    return "/".join(p for p in parts if p not in (".", "/"))


def resolve_frame(root: Path, text: str, dataset: str) -> Path:
    """A frame path of the index under ROOT: relative ones as they are; absolute ones as
    they are if present, else from the dataset's folder name on (moved trees)."""
    p = PurePosixPath(text.replace("\\", "/"))
    if not p.is_absolute():
        return root / p
    if Path(p).exists():
        return Path(p)
    parts = p.parts
    return root.joinpath(*parts[parts.index(dataset):]) if dataset in parts else Path(p)


def read(root: Path, opts: Options) -> Index:
    if not opts.index:
        raise LayoutError("dfb: give the DeepfakeBench index JSON (import-dfb INDEX.json)")
    data = load_index(Path(opts.index))
    index = Index("dfb", str(root), fill=("train", "validation"))
    for dataset, labels in data.items():
        name = DATASETS.get(dataset, dataset)
        for label_name, splits in labels.items():
            if not isinstance(splits, dict):
                continue
            for split, tree in splits.items():
                if split not in SPLITS or not isinstance(tree, dict):
                    continue
                for comp, video, entry in _videos(tree):
                    if opts.compression and comp and comp != opts.compression:
                        continue
                    _add(index, root, dataset, name, label_name, SPLITS[split], comp, video,
                         entry)
    seen: dict[str, Row] = {}
    for r in settle_groups(index.rows, index.notes):
        seen.setdefault(r.video, r)  # one row per video, in its settled split
    index.rows = list(seen.values())
    index.missing = sorted(set(index.missing), key=lambda m: m.path)
    return index


def _add(index: Index, root: Path, dataset: str, name: str, label_name: str, split: str,
         comp: str, video: str, entry: dict[str, Any]) -> None:
    label = 1 if is_real(str(entry.get("label", label_name))) else 0
    method = "real" if label else method_of(label_name)
    frames = []
    for f in entry.get("frames", []):
        p = resolve_frame(root, str(f), dataset)
        if p.is_file():
            frames.append((str(p), frame_key(str(f))))
        else:
            index.missing.append(Missing(str(p), f"frame of {label_name}/{video}, absent"))
    if not frames:
        return
    vid = f"{name}-{comp}-{method}-{video}" if comp else f"{name}-{method}-{video}"
    group = f"{name}-{video.split('_')[0]}" if name in ("ffpp",) else f"{name}-{video}"
    frames.sort()
    index.rows.append(Row(str(Path(frames[0][0]).parent), label, split, name, method, vid,
                          group, comp, tuple(f for f, _ in frames),
                          tuple(k for _, k in frames)))
