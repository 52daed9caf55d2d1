"""Readers of the public deepfake datasets' own download layouts -> rows with the official
split, source (dataset, compression, method), video and group, plus what is missing.

``READERS[name](root, options)`` for name in ffpp, dfd, celebdf, dfdc, dfdcp, wilddeepfake,
dfb; ``read_dataset`` is the one entry point the commands use.
"""

from __future__ import annotations

from pathlib import Path

from ensemble_dfd.datasets import celebdf, dfb, dfd, dfdc, dfdcp, ffpp, wilddeepfake
from ensemble_dfd.datasets.base import (
    Index,
    LayoutError,
    Missing,
    Options,
    Reader,
    Row,
    check_groups,
)

READERS: dict[str, Reader] = {
    "ffpp": ffpp.read,
    "dfd": dfd.read,
    "celebdf": celebdf.read,
    "dfdc": dfdc.read,
    "dfdcp": dfdcp.read,
    "wilddeepfake": wilddeepfake.read,
    "dfb": dfb.read,
}

# what each reader reads (README table; `prepare --help`)
DESCRIPTIONS = {
    "ffpp": "original_sequences/youtube/<comp>/videos, manipulated_sequences/<method>/<comp>/"
            "videos, splits/{train,val,test}.json",
    "dfd": "original_sequences/actors/<comp>/videos, manipulated_sequences/DeepFakeDetection/"
           "<comp>/videos (all test)",
    "celebdf": "Celeb-real/, YouTube-real/, Celeb-synthesis/[<kind>/<method>/], "
               "List_of_testing_videos.txt",
    "dfdc": "dfdc_train_part_N/metadata.json (+ test labels.csv)",
    "dfdcp": "dataset.json (label, set)",
    "wilddeepfake": "{real,fake}_{train,test}/<sequence>/ or .tar.gz (faces, no detection)",
    "dfb": "DeepfakeBench dataset JSON + its frames (faces, no detection)",
}

IMAGE_DATASETS = ("wilddeepfake", "dfb")  # rows are face images: no detection


def read_dataset(name: str, root: Path, options: Options | None = None) -> Index:
    """Read ROOT with the named reader; LayoutError when it matches no layout."""
    if name not in READERS:
        raise LayoutError(f"--dataset {name}: unknown (known: {', '.join(READERS)})")
    index = READERS[name](Path(root), options or Options())
    crossing = check_groups(index.rows)
    if crossing:  # a reader's bug, not the user's: say so loudly
        raise AssertionError(f"{name}: groups in several official splits: {crossing[:5]}")
    return index


__all__ = ["DESCRIPTIONS", "IMAGE_DATASETS", "READERS", "Index", "LayoutError", "Missing",
           "Options", "Row", "read_dataset"]
