"""The DFDC Preview (DFDC-P) as downloaded.

    dataset.json   {"<path>.mp4": {"label": "real"|"fake", "set": "train"|"test", ...}}
    method_A/<target>/<source>/....mp4   method_B/...   original_videos/<id>/....mp4

``set = test`` is the ``test`` split; ``train`` videos go to train/validation by group.
Method: the first folder of the path; group: the second (the filmed person's id).
"""

from __future__ import annotations

import json
from pathlib import Path

from ensemble_dfd.datasets.base import Index, LayoutError, Missing, Options, Row, expect


def read(root: Path, opts: Options) -> Index:
    meta = root / "dataset.json"
    expect(root, "DFDC Preview", meta.is_file(), [
        'dataset.json ({"<path>.mp4": {"label": "real"|"fake", "set": "train"|"test"}})',
        "method_A/, method_B/, original_videos/ with the listed .mp4 files"])
    try:
        data = json.loads(meta.read_text())
        items = sorted(data.items())
    except (ValueError, AttributeError) as exc:
        raise LayoutError(f"{meta}: not a DFDC Preview dataset.json ({exc})") from None
    index = Index("dfdcp", str(root), fill=("train", "validation"))
    for rel, info in items:
        path = root / rel
        if not path.is_file():
            index.missing.append(Missing(str(path), "listed in dataset.json, absent"))
            continue
        parts = Path(rel).parts
        label = 1 if str(info.get("label", "")).lower() == "real" else 0
        split = "test" if str(info.get("set", "")).lower() == "test" else ""
        group = parts[1] if len(parts) > 2 else Path(rel).stem
        index.rows.append(Row(str(path), label, split, "dfdcp", parts[0] if len(parts) > 1
                              else ("real" if label else "fake"),
                              "_".join(Path(rel).with_suffix("").parts), group))
    return index
