"""The crop recipe a `prepare` output records, carried to what is made from it.

``prepare`` records its settings in ``OUT/.prepare.json``; the keys that decide how faces are
cropped (``align``) and which frames are picked (``frame_rule``) appear there only when not
their defaults, so outputs made before the keys existed still match. A dataset split from
a faces folder takes that folder's recipe, and a run trained on a dataset records it in its
``config.toml``, so that `predict` and `serve` crop new media the way the training faces were.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from ensemble_dfd.config import ConfigError, PrepareConfig, RunConfig
from ensemble_dfd.prepare.common import MARKER
from ensemble_dfd.runio import read_json

CROP_DEFAULTS = {"align": "none", "frame_rule": "round"}


def recorded_crop(folder: Path) -> dict[str, str] | None:
    """The recipe recorded by the `prepare` output in ``folder``; None where there is none
    (not a prepare output, or an unreadable marker)."""
    marker = folder / MARKER
    if not marker.is_file():
        return None
    try:
        params = read_json(marker).get("params", {})
    except (OSError, ValueError):
        return None
    return {k: str(params.get(k, d)) for k, d in CROP_DEFAULTS.items()}


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
    mine = {k: getattr(cfg.prepare, k) for k in CROP_DEFAULTS}
    if crop is None or crop == mine:
        return cfg, ""
    for key, value in mine.items():
        if value != CROP_DEFAULTS[key] and value != crop[key]:
            raise ConfigError(f"{folder}: its faces were made with prepare.{key} = "
                              f"{crop[key]!r}, the config says {value!r}; a run crops new "
                              "media like its training faces: drop the setting or re-prepare")
    taken = {k: v for k, v in crop.items() if mine[k] != v}
    note = ", ".join(f"prepare.{k} = {v!r}" for k, v in taken.items())
    return (dataclasses.replace(cfg, prepare=dataclasses.replace(cfg.prepare, **taken)),
            f"{folder}: faces made with {note}; recorded in the run for predict and serve")
