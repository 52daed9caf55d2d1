"""DeepfakeBench test scores -> a logits table (model, split, path, label, logit, video).

DeepfakeBench's test loop collects, per image, ``prob`` = P(fake) (softmax of the fake
class), ``label`` (1 = fake) and the image path (``img_names``); its video-level metrics
take an image's parent folder as its video. Here Real = 1 and a logit > 0 means Real, so
label -> 1 - label and logit = log((1 - p) / p) (p clipped to [1e-7, 1 - 1e-7]).

Accepted columns (CSV or parquet): the path as ``path``, ``image``, ``img_name``,
``img_names`` or ``image_path``; P(fake) as ``prob``, ``pred``, ``prediction`` or
``p_fake``; ``label``; ``split`` (the DeepfakeBench run's test set, e.g. the dataset it
scored; with ``--dfb-data`` taken from that dataset where absent); optional ``model``
(default: the file's name), ``source``, ``group``. ``--dfb-data DATA`` (a `prepare
import-dfb` dataset of the same frames) renames each frame to our path, so the scores join
the logits our models wrote on DATA.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ensemble_dfd.datasets.dfb import frame_key
from ensemble_dfd.errors import UserError

PATH_NAMES = ("path", "image", "img_name", "img_names", "image_path")
PROB_NAMES = ("prob", "pred", "prediction", "p_fake")
EPS = 1e-7


class DfbScoresError(UserError, ValueError):
    """A DeepfakeBench score table that cannot be read (names the file and the column)."""


def _pick(df: pd.DataFrame, names: tuple[str, ...], what: str, where: str) -> str:
    for n in names:
        if n in df.columns:
            return n
    raise DfbScoresError(f"{where}: no {what} column (one of {', '.join(names)}; has "
                         f"{', '.join(map(str, df.columns))})")


def dataset_keys(data: Path) -> pd.DataFrame:
    """original (the frame's DeepfakeBench id) -> our path and split, from a dataset made
    by `prepare import-dfb` (its manifest's ``original`` column)."""
    manifest = Path(data) / "manifest.csv"
    if not manifest.is_file():
        raise DfbScoresError(f"--dfb-data {data}: no manifest.csv (a `prepare import-dfb` "
                             "output)")
    m = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    if "original" not in m.columns or not (m["original"] != "").any():
        raise DfbScoresError(f"{manifest}: no original column (made by `prepare import-dfb` "
                             "from a DeepfakeBench index?)")
    name = Path(data).resolve().name  # load_dataset's prefix: the paths collect stores
    return pd.DataFrame({"key": m["original"], "path": name + "/" + m["path"],
                         "split": m["split"]})


def _map_paths(out: pd.DataFrame, keys: pd.DataFrame, where: str) -> pd.DataFrame:
    """Rename DeepfakeBench's frame paths to our dataset's (and take its split where the
    scores name none); every scored frame must be in the dataset."""
    lookup = keys.drop_duplicates("key").set_index("key")
    k = [frame_key(p) for p in out["path"]]
    found = pd.Series(k).isin(lookup.index).to_numpy()
    if not found.all():
        raise DfbScoresError(f"{where}: {int((~found).sum())} scored frame(s) are not in "
                             f"--dfb-data, e.g. {k[int(np.flatnonzero(~found)[0])]}")
    out = out.assign(path=lookup.loc[k, "path"].to_numpy())
    if out["split"].isna().all():
        out["split"] = lookup.loc[k, "split"].to_numpy()
    return out


def to_logits_table(raw: pd.DataFrame, where: str, model: str,
                    keys: pd.DataFrame | None = None) -> pd.DataFrame:
    """DeepfakeBench rows -> our logits-table rows (labels and scores flipped); with
    ``keys`` (dataset_keys) the frames take our dataset's paths (and splits)."""
    path_col = _pick(raw, PATH_NAMES, "image path", where)
    prob_col = _pick(raw, PROB_NAMES, "P(fake)", where)
    if "split" not in raw.columns and keys is not None:
        raw = raw.assign(split=None)
    for col in ("label", "split"):
        if col not in raw.columns:
            raise DfbScoresError(f"{where}: no {col} column (DeepfakeBench label: 1 = fake; "
                                 "split: which test set the row was scored on)")
    prob = pd.to_numeric(raw[prob_col], errors="coerce").to_numpy(dtype=float)
    bad = ~((prob >= 0) & (prob <= 1))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DfbScoresError(f"{where}: {prob_col} must be a probability in [0, 1]; row {i} "
                             f"has {raw[prob_col].iloc[i]!r}")
    label = pd.to_numeric(raw["label"], errors="coerce")
    if not label.isin([0, 1]).all():
        raise DfbScoresError(f"{where}: label must be 0 (real) or 1 (fake), DeepfakeBench's")
    p = np.clip(prob, EPS, 1 - EPS)
    paths = raw[path_col].astype(str).str.replace("\\", "/", regex=False)
    out = pd.DataFrame({
        "model": raw["model"].astype(str) if "model" in raw.columns else model,
        "split": raw["split"].where(raw["split"].isna(), raw["split"].astype(str)),
        "path": paths,
        "label": (1 - label).astype(np.int64),
        "logit": np.log1p(-p) - np.log(p),
        "video": [str(PurePosixPath(x).parent) for x in paths],
    })
    for col in ("source", "group", "run"):
        if col in raw.columns:
            out[col] = raw[col].astype(str)
    if keys is not None:
        out = _map_paths(out, keys, where)
    if "group" not in out.columns:  # the video, unless a joined table names it (join)
        out["group"] = None
    return out
