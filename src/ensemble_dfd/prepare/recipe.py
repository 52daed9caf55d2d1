"""The crop recipe a `prepare` output records, carried to what is made from it.

``prepare`` records its settings in ``OUT/.prepare.json``. The keys that decide where faces
are found and how they are cropped (detector, its search, margin, frame width, alignment)
and which frames are picked (``frame_rule``) are the recipe: a dataset split from a faces
folder takes that folder's recipe, and a run trained on a dataset records it in its
``config.toml``, so that `predict` and `serve` detect and crop new media the way the
training faces were. A key missing from an output made before it existed reads as what that
output did (``RECORDED_BEFORE``).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from ensemble_dfd.config import ConfigError, PrepareConfig, RunConfig
from ensemble_dfd.prepare.common import MARKER
from ensemble_dfd.runio import read_json

# what an output made before a key existed did (`prepare` drops these keys at these values)
RECORDED_BEFORE: dict[str, Any] = {"align": "none", "frame_rule": "round", "detector": "hog",
                                   "upsample": 1, "detect_size": 0, "margin": 0.0,
                                   "max_width": 640}
RECIPE = tuple(RECORDED_BEFORE)


def recorded_crop(folder: Path) -> dict[str, Any] | None:
    """The recipe recorded by the `prepare` output in ``folder``; None where there is none
    (not a prepare output, or an unreadable marker)."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        params = read_json(marker).get("params", {})
        return {k: type(d)(params.get(k, d)) for k, d in RECORDED_BEFORE.items()}
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def with_crop_of(folder: Path, p: PrepareConfig) -> PrepareConfig:
    """``p`` with the recipe the faces in ``folder`` were made with (unchanged where the
    folder records none)."""
    crop = recorded_crop(folder)
    return p if crop is None else dataclasses.replace(p, **crop)


def run_config_for(data: Path, cfg: RunConfig) -> tuple[RunConfig, str]:
    """The run's config with the dataset's crop recipe, and a line saying what was taken
    ('' when nothing changed). A config that names a recipe other than the dataset's is an
    error: the run would crop new media unlike its training faces."""
    folder = data if data.is_dir() else data.parent
    crop = recorded_crop(folder)
    mine = {k: getattr(cfg.prepare, k) for k in RECIPE}
    if crop is None or crop == mine:
        return cfg, ""
    default = PrepareConfig()
    for key, value in mine.items():
        if value != getattr(default, key) and value != crop[key]:
            raise ConfigError(f"{folder}: its faces were made with prepare.{key} = "
                              f"{crop[key]!r}, the config says {value!r}; a run crops new "
                              "media like its training faces: drop the setting or re-prepare")
    taken = {k: v for k, v in crop.items() if mine[k] != v}
    note = ", ".join(f"prepare.{k} = {v!r}" for k, v in taken.items())
    return (dataclasses.replace(cfg, prepare=dataclasses.replace(cfg.prepare, **taken)),
            f"{folder}: faces made with {note}; recorded in the run for predict and serve")
