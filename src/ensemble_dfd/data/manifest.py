"""Splits, manifests, composition and leakage: pure pandas/numpy over tables of images.

Splits are grouped: every image of a group (a video, or a real video together with the
fakes made from it) lands in one split, so a model is never tested on a face it has seen
from another frame of the same footage.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from ensemble_dfd import CLASS_NAMES

SPLITS = ("train", "validation", "test")
# video: the source video's id (the unit of video-level scores), written when known;
# method: the manipulation (or the real footage's folder), written by the dataset readers;
# original: the image's id in a face-crop dataset's own index (import-dfb: the frame path
# DeepfakeBench's scores name, so its detectors' scores join ours)
MANIFEST_COLUMNS = ("path", "split", "label", "source", "group", "video", "method",
                    "original", "width", "height", "sha256")
OPTIONAL_COLUMNS = ("video", "method", "original")


# ---------------------------------------------------------------- groups


def video_groups(stems: Sequence[str], labels: Sequence[int]) -> dict[str, str]:
    """Group of each video stem, so a fake never leaves the split of its source real video.

    Rule (FaceForensics++ names fakes ``<target>_<source>``: 519_515 is video 519 with the
    face of 515): a fake whose stem splits on '_' into parts that are stems of *real* videos
    in the same input joins their group (both parts: the target's footage and the source's
    identity are both in it; groups merge transitively). Any other video is its own group.
    A group is named after its alphabetically first real video, else the video's own stem.
    """
    reals = {s for s, y in zip(stems, labels, strict=True) if int(y) == 1}
    parent = {s: s for s in stems}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(a: str, b: str) -> None:
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)

    for stem, label in zip(stems, labels, strict=True):
        if int(label) == 1:
            continue
        for part in re.split(r"_", stem):
            if part and part != stem and part in reals:
                union(stem, part)
    members: dict[str, list[str]] = {}
    for s in stems:
        members.setdefault(find(s), []).append(s)
    names = {}
    for root, group in members.items():
        real_members = sorted(m for m in group if m in reals)
        names[root] = real_members[0] if real_members else root
    return {s: names[find(s)] for s in stems}


# ---------------------------------------------------------------- splitting


def check_ratios(ratios: Sequence[float]) -> tuple[float, float, float]:
    r = tuple(float(x) for x in ratios)
    if len(r) != 3 or any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}")
    return r  # type: ignore[return-value]


def assign_groups(groups: Sequence[str], labels: Sequence[int],
                  ratios: Sequence[float] = (0.80, 0.19, 0.01), seed: int = 1234,
                  ) -> dict[str, str]:
    """Map each group to a split so that image counts per split and class approach the ratios.

    Groups are visited largest first (ties in a seeded random order); each goes to the
    split where adding it increases the squared distance to the per-class targets least
    (a split with ratio 0 gets nothing). Deterministic for a given seed and input.
    """
    ratios = check_ratios(ratios)
    frame = pd.DataFrame({"group": list(groups), "label": np.asarray(labels, dtype=int)})
    if frame.empty:
        return {}
    counts = frame.groupby(["group", "label"]).size().unstack(fill_value=0).sort_index()
    totals = counts.sum(axis=0).to_numpy(dtype=float)
    target = np.outer(ratios, totals)  # (split, class)
    current = np.zeros_like(target)
    open_splits = [i for i, r in enumerate(ratios) if r > 0]
    rng = np.random.default_rng(seed)
    values = counts.to_numpy(dtype=float)
    # Largest groups first (an indivisible group placed late wrecks the ratios); the seed
    # shuffles groups of equal size, which is where the choice really is.
    shuffled = rng.permutation(len(counts))
    order = shuffled[np.argsort(-values.sum(axis=1)[shuffled], kind="stable")]
    out: dict[str, str] = {}
    for i in order:
        n = values[i]
        cost = [float((n * (2 * (current[s] - target[s]) + n)).sum()) for s in open_splits]
        best = open_splits[int(np.argmin(cost))]
        current[best] += n
        out[str(counts.index[i])] = SPLITS[best]
    return out


def grouped_split(groups: Sequence[str], labels: Sequence[int],
                  ratios: Sequence[float] = (0.80, 0.19, 0.01), seed: int = 1234) -> list[str]:
    """The split of each row (rows of one group always share it)."""
    mapping = assign_groups(groups, labels, ratios, seed)
    return [mapping[str(g)] for g in groups]


def keep_official_splits(groups: Sequence[str], labels: Sequence[int], splits: Sequence[str],
                         ratios: Sequence[float] = (0.80, 0.19, 0.01), seed: int = 1234,
                         allowed: Sequence[str] = SPLITS) -> list[str]:
    """The split of each row where a dataset names one (an official split is kept, never
    re-drawn); rows without one ('') are split by group over the ``allowed`` splits, with
    ``ratios`` renormalised to them (e.g. Celeb-DF: its test list is the test split, the
    rest goes to train/validation; the readers keep a group within one official split)."""
    ratios = check_ratios(ratios)
    todo = [i for i, s in enumerate(splits) if not s]
    masked = [r if name in allowed else 0.0 for name, r in zip(SPLITS, ratios, strict=True)]
    if todo and sum(masked) <= 0:
        masked = [1.0 if name in allowed else 0.0 for name in SPLITS]
    masked = [r / sum(masked) for r in masked] if todo else list(ratios)
    drawn = assign_groups([groups[i] for i in todo], [labels[i] for i in todo], masked, seed)
    return [s or drawn[str(g)] for g, s in zip(groups, splits, strict=True)]


def balance_classes(df: pd.DataFrame, seed: int = 1234) -> pd.DataFrame:
    """Within each split, keep a seeded random subset of the larger class as large as the
    smaller one (the study's splits were about 50/50). Row order is kept."""
    keep: list[int] = []
    for _, part in df.groupby("split", sort=False):
        sizes = part.groupby("label").size()
        if len(sizes) < 2:
            keep.extend(part.index)
            continue
        n = int(sizes.min())
        for _, cls in part.groupby("label"):
            keep.extend(cls.sample(n=n, random_state=seed).index if len(cls) > n else cls.index)
    return df.loc[sorted(keep)]


# ---------------------------------------------------------------- manifest


def class_name(label: int) -> str:
    return CLASS_NAMES[int(label)]


def layout_paths(names: Sequence[str], splits: Sequence[str], labels: Sequence[int],
                 ) -> list[str]:
    """``<split>/<Fake|Real>/<name>`` per row; a name already used in that folder gets
    ``_2``, ``_3``... before its suffix, so flattening several folders never overwrites."""
    used: set[str] = set()
    out = []
    for name, split, label in zip(names, splits, labels, strict=True):
        stem, suffix = Path(name).stem, Path(name).suffix
        rel = f"{split}/{class_name(label)}/{name}"
        k = 1
        while rel.lower() in used:
            k += 1
            rel = f"{split}/{class_name(label)}/{stem}_{k}{suffix}"
        used.add(rel.lower())
        out.append(rel)
    return out


def manifest_frame(rows: pd.DataFrame) -> pd.DataFrame:
    """The manifest columns in order (``video`` only when ``rows`` has it), labels written
    as Real/Fake, sorted by path."""
    cols = [c for c in MANIFEST_COLUMNS if c not in OPTIONAL_COLUMNS or c in rows.columns]
    out = rows.loc[:, cols].copy()
    out["label"] = [class_name(v) if str(v) in ("0", "1") else v for v in out["label"]]
    return out.sort_values("path", kind="stable").reset_index(drop=True)


# ---------------------------------------------------------------- composition


def composition_table(df: pd.DataFrame) -> pd.DataFrame:
    """Counts per split x source x class, with % of the split and % of all images.

    ``df`` needs split, source and label (0/1 or Fake/Real). Rows: each (split, source),
    then a split total (source 'all'), then the grand total (split 'all').
    """
    d = df.copy()
    d["label"] = [class_name(v) if str(v) in ("0", "1") else str(v).capitalize()
                  for v in d["label"]]
    d["source"] = d["source"].fillna("").astype(str).replace("", "(none)")
    order = [s for s in SPLITS if s in set(d["split"])] + sorted(set(d["split"]) - set(SPLITS))
    total = len(d)
    rows = []

    def row(split: str, source: str, part: pd.DataFrame, split_n: int) -> dict[str, object]:
        fake = int((part["label"] == "Fake").sum())
        real = int((part["label"] == "Real").sum())
        n = len(part)
        return {"split": split, "source": source, "Fake": fake, "Real": real, "total": n,
                "pct_fake": 100.0 * fake / n if n else 0.0,
                "pct_of_split": 100.0 * n / split_n if split_n else 0.0,
                "pct_of_all": 100.0 * n / total if total else 0.0}

    for split in order:
        part = d[d["split"] == split]
        for source in sorted(set(part["source"])):
            rows.append(row(split, source, part[part["source"] == source], len(part)))
        rows.append(row(split, "all", part, len(part)))
    rows.append(row("all", "all", d, total))
    return pd.DataFrame(rows)


def format_composition(table: pd.DataFrame) -> str:
    """The composition table as aligned text (what `prepare stats` prints)."""
    shown = table.copy()
    for col in ("pct_fake", "pct_of_split", "pct_of_all"):
        shown[col] = [f"{v:.1f}%" for v in shown[col]]
    return shown.to_string(index=False)


# ---------------------------------------------------------------- leakage


def dhash(img: np.ndarray) -> int:
    """64-bit difference hash: is each pixel of an 8 x 9 gray thumbnail brighter
    than its right neighbour. Robust to rescaling and re-encoding, so re-saved copies of
    one face match where a byte hash does not."""
    gray = img if img.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(img[..., :3]),
                                                   cv2.COLOR_RGB2GRAY)
    small = cv2.resize(gray, (9, 8), interpolation=cv2.INTER_AREA)
    bits = (small[:, 1:] > small[:, :-1]).ravel()
    return int(np.packbits(bits).view(">u8")[0])


def exact_duplicates(df: pd.DataFrame) -> pd.DataFrame:
    """Files with identical sha256 in more than one split: sha256, splits, paths."""
    rows = []
    for sha, part in df.groupby("sha256"):
        splits = sorted(set(part["split"]))
        if len(splits) > 1:
            rows.append({"sha256": sha, "splits": ",".join(splits),
                         "paths": ";".join(sorted(part["path"]))})
    return pd.DataFrame(rows, columns=["sha256", "splits", "paths"])


def near_duplicates(df: pd.DataFrame, threshold: int = 2, block: int = 2048) -> pd.DataFrame:
    """Pairs of images in different splits whose dHashes differ in <= threshold bits
    (identical files included): path_a, split_a, path_b, split_b, distance."""
    hashes = np.asarray([int(h) for h in df["dhash"]], dtype=np.uint64)
    splits = df["split"].to_numpy()
    paths = df["path"].to_numpy()
    names = sorted(set(splits))
    rows = []
    for i, a in enumerate(names):
        ia = np.flatnonzero(splits == a)
        for b in names[i + 1:]:
            ib = np.flatnonzero(splits == b)
            for start in range(0, len(ia), block):  # blocks bound memory to block x len(ib)
                chunk = ia[start:start + block]
                dist = np.bitwise_count(hashes[chunk][:, None] ^ hashes[ib][None, :])
                for r, c in zip(*np.nonzero(dist <= threshold), strict=True):
                    rows.append({"path_a": paths[chunk[r]], "split_a": a,
                                 "path_b": paths[ib[c]], "split_b": b,
                                 "distance": int(dist[r, c])})
    return pd.DataFrame(rows, columns=["path_a", "split_a", "path_b", "split_b", "distance"])


def groups_across_splits(df: pd.DataFrame) -> list[str]:
    """Groups found in more than one split (should be empty)."""
    n = df.groupby("group")["split"].nunique()
    return sorted(str(g) for g in n[n > 1].index)

