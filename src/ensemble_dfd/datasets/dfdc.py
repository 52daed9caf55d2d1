"""The Deepfake Detection Challenge (DFDC) as Kaggle ships it.

    dfdc_train_part_N/metadata.json   {"x.mp4": {"label": "FAKE"|"REAL", "split": "train",
    dfdc_train_part_N/*.mp4                       "original": "y.mp4"}}   (fakes only)
    <test folder>/labels.csv          filename,label  (the public test set; 1 = fake)

Group: the real ``original`` a fake was made from (a real is its own). Split: by part,
``--part-splits`` (default ``train=0-34,validation=35-39,test=40-49``, icpr2020dfdc's
``dfdc-35-5-10``), or ``--part-splits group`` for a grouped split by the ratios; the test
set's videos are ``test``.
"""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from ensemble_dfd.datasets.base import (
    Index,
    LayoutError,
    Missing,
    Options,
    Row,
    expect,
    settle_groups,
)

DEFAULT_PART_SPLITS = "train=0-34,validation=35-39,test=40-49"
PART = re.compile(r"dfdc_train_part_(\d+)$")


def parse_part_splits(text: str) -> dict[int, str] | None:
    """'train=0-34,validation=35-39,test=40-49' -> part -> split; 'group' -> None."""
    if text.strip() == "group":
        return None
    out: dict[int, str] = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        split, _, span = item.partition("=")
        if split not in ("train", "validation", "test") or not span:
            raise LayoutError(f"--part-splits: {item!r} is not SPLIT=A-B (SPLIT one of "
                              "train, validation, test), nor 'group'")
        lo, _, hi = span.partition("-")
        try:
            parts = range(int(lo), int(hi or lo) + 1)
        except ValueError:
            raise LayoutError(f"--part-splits: {item!r}: parts must be numbers") from None
        for p in parts:
            out[p] = split
    return out


def _metadata(path: Path) -> dict[str, dict]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise LayoutError(f"{path}: not a readable DFDC metadata.json ({exc})") from None
    if not isinstance(data, dict):
        raise LayoutError(f"{path}: expected {{\"x.mp4\": {{\"label\": ...}}}}")
    return data


def read(root: Path, opts: Options) -> Index:
    parts = sorted((p for p in root.glob("dfdc_train_part_*") if PART.match(p.name)
                    and (p / "metadata.json").is_file()),
                   key=lambda p: int(PART.match(p.name).group(1)))  # type: ignore[union-attr]
    if (root / "metadata.json").is_file() and PART.match(root.name):
        parts = [root]  # ROOT is one part
    tests = sorted(root.rglob("labels.csv")) if root.is_dir() else []
    expect(root, "DFDC", bool(parts or tests), [
        "dfdc_train_part_N/metadata.json (+ its .mp4 files)",
        "or the test set's labels.csv (filename,label) beside its .mp4 files"])
    mapping = parse_part_splits(opts.part_splits or DEFAULT_PART_SPLITS)
    index = Index("dfdc", str(root))
    for part in parts:
        n = int(PART.match(part.name).group(1))  # type: ignore[union-attr]
        split = "" if mapping is None else mapping.get(n, "")
        if mapping is not None and not split:
            index.notes.append(f"{part}: part {n} is in no --part-splits range; its videos "
                               "are split by group")
        for name, meta in sorted(_metadata(part / "metadata.json").items()):
            label = 1 if str(meta.get("label", "")).upper() == "REAL" else 0
            original = str(meta.get("original") or name) if label == 0 else name
            _add(index, part / name, label, split, original)
    for labels in tests:
        _read_test(index, labels)
    index.rows = settle_groups(index.rows, index.notes)
    return index


def _add(index: Index, path: Path, label: int, split: str, original: str) -> None:
    if not path.is_file():
        index.missing.append(Missing(str(path), "listed in metadata.json, absent"))
        return
    index.rows.append(Row(str(path), label, split, "dfdc", "real" if label else "fake",
                          path.stem, Path(original).stem))


def _read_test(index: Index, labels: Path) -> None:
    with labels.open(newline="") as fh:
        reader = csv.DictReader(fh)
        if not {"filename", "label"} <= set(reader.fieldnames or ()):
            return  # another labels.csv (not the DFDC test set's)
        for rec in reader:
            label = 0 if str(rec["label"]).strip() in ("1", "1.0") else 1  # DFDC: 1 = fake
            _add(index, labels.parent / rec["filename"], label, "test", rec["filename"])
