"""Bring-your-own logits: a table of logits from any detector, turned into a minimal run
folder that `stack` and `report` read like any other.

The table (CSV or parquet) has one row per (model, split, image): columns `model, split,
path, label, logit` (label 1 = Real, 0 = Fake; logit > 0 means Real), optionally `run`
(default: the table's file name), `group` (the video or other unit that CIs and folds keep
together; default: the path), `source` (manipulation or origin, for per-source rows) and
`video`. Importing writes OUT/logits.parquet, OUT/images.parquet (split, path, label,
group, source) and OUT/imported.json (the table's checksum and the split mapping); the
split the meta-learners are fit on is stored under the name `validation`.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd.datasets.dfb_scores import dataset_keys, to_logits_table
from ensemble_dfd.rundir import CONFIG_FILE, FIT_SPLIT, OOF_SPLIT, STACK_DIR
from ensemble_dfd.runio import atomic_write, guard_overwrite, sha256_file, write_json
from ensemble_dfd.stacking.logits import (
    IMAGES_FILE,
    LOGIT_COLUMNS,
    LOGITS_FILE,
    StoreError,
    sort_store,
)
from ensemble_dfd.stacking.logits import validate as validate_store

REQUIRED = ("model", "split", "path", "label", "logit")
OPTIONAL = ("run", "group", "source", "video")
IMPORTED_FILE = "imported.json"


class LogitsTableError(StoreError):
    """A logits table that cannot be imported (the message names the file and the row)."""


@dataclass(frozen=True)
class ImportedTable:
    """A checked table as a logits store and its per-image table, ready to write."""

    logits: pd.DataFrame
    images: pd.DataFrame
    info: dict[str, Any]


LOGITS_FORMATS = ("table", "dfb")


def add_input_args(p: argparse.ArgumentParser, out_help: str) -> None:
    """``--run RUN`` or ``--logits TABLE [--logits TABLE ...] --out DIR [--fit-split S]``:
    where stack and report read their logits (one definition for both commands)."""
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", type=Path, help="run folder with logits.parquet")
    src.add_argument("--logits", type=Path, metavar="TABLE", action="append",
                     help="logits from elsewhere: a CSV or parquet table with columns model, "
                          "split, path, label, logit (optional run, group, source, video); "
                          "imported into --out as a run folder (README: 'Bring your own "
                          "logits'). Repeat to join several detectors' tables (same images)")
    p.add_argument("--logits-format", choices=LOGITS_FORMATS, action="append",
                   help="format of each --logits TABLE (one for all, or one per table): "
                        "'table' (default, ours) or 'dfb' (DeepfakeBench test scores: "
                        "P(fake), label 1 = fake, image path; flipped to ours)")
    p.add_argument("--dfb-data", type=Path, metavar="DATA",
                   help="with --logits-format dfb: the `prepare import-dfb` dataset of the "
                        "scored frames; they take its paths (and splits) to join our logits")
    p.add_argument("--out", type=Path, help=out_help)
    p.add_argument("--fit-split", default=FIT_SPLIT,
                   help="with --logits: the table's split the meta-learners are fit on "
                        f"(stored as '{FIT_SPLIT}'; default %(default)s)")


def read_table(path: str | Path) -> pd.DataFrame:
    """The raw table: `.csv` (optionally `.csv.gz`) or `.parquet`/`.pq`."""
    path = Path(path)
    if not path.is_file():
        raise LogitsTableError(f"{path}: no such file")
    name = path.name.lower()
    text_cols = {c: str for c in ("model", "split", "path", *OPTIONAL)}
    try:
        if name.endswith((".csv", ".csv.gz")):
            return pd.read_csv(path, dtype=text_cols, keep_default_na=False,
                               na_values={"label": ["", "NA", "NaN", "nan"],
                                          "logit": ["", "NA", "NaN", "nan"]})
        if name.endswith((".parquet", ".pq")):
            return pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError, pd.errors.ParserError) as exc:
        kind = "CSV" if ".csv" in name else "parquet"
        raise LogitsTableError(f"{path}: cannot be read as {kind}: {exc}") from None
    raise LogitsTableError(f"{path}: unknown table format (expected a .csv or .parquet file)")


def _row(df: pd.DataFrame, mask: np.ndarray | pd.Series, csv: bool) -> str:
    """'row N' of the first masked row (the CSV line number for CSV files)."""
    i = int(np.flatnonzero(np.asarray(mask))[0])
    return f"line {i + 2}" if csv else f"row {i}"


def _show(v: Any) -> str:
    """A cell as the user wrote it: text quoted, numbers plain."""
    return repr(v) if isinstance(v, str) else str(v.item() if isinstance(v, np.generic) else v)


def _check_columns(df: pd.DataFrame, where: str, csv: bool) -> pd.DataFrame:
    """Required columns present, text columns filled, labels 0/1, logits finite."""
    if df.empty:
        raise LogitsTableError(f"{where}: the table has no rows")
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise LogitsTableError(f"{where}: missing column(s) {', '.join(missing)} (has: "
                               f"{', '.join(map(str, df.columns))}; needs {', '.join(REQUIRED)}"
                               f", optionally {', '.join(OPTIONAL)})")
    df = df.reset_index(drop=True)
    for c in ("model", "split", "path", *[c for c in OPTIONAL if c in df.columns]):
        empty = df[c].isna() | (df[c].astype(str).str.strip() == "")
        if c in ("model", "split", "path") and empty.any():
            raise LogitsTableError(f"{where}: {int(empty.sum())} empty value(s) in column {c}, "
                                   f"first at {_row(df, empty, csv)}")
        df[c] = df[c].astype(str).where(~empty, None).astype(object)
    label = pd.to_numeric(df["label"], errors="coerce")
    bad = ~label.isin([0, 1])
    if bad.any():
        first = df["label"][bad].iloc[0]
        raise LogitsTableError(f"{where}: column label must be 0 (Fake) or 1 (Real); "
                               f"{int(bad.sum())} row(s) are not, first {_show(first)} at "
                               f"{_row(df, bad, csv)}")
    logit = pd.to_numeric(df["logit"], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(logit)
    if bad.any():
        r = df[bad].iloc[0]
        raise LogitsTableError(f"{where}: {int(bad.sum())} logit(s) are missing, NaN, infinite "
                               f"or not numbers, first {_show(r['logit'])} at {_row(df, bad, csv)} "
                               f"(model {r['model']}, split {r['split']}, path {r['path']})")
    return df.assign(label=label.astype(np.int64), logit=logit)


def _check_rows(df: pd.DataFrame, where: str, csv: bool) -> None:
    """No duplicate rows, one label (and group) per image, and in every split every model
    scored exactly the same images."""
    dup = df.duplicated(["model", "split", "path"])
    if dup.any():
        r = df[dup].iloc[0]
        raise LogitsTableError(f"{where}: {int(dup.sum())} duplicate (model, split, path) "
                               f"row(s), first at {_row(df, dup, csv)}: model {r['model']}, "
                               f"split {r['split']}, path {r['path']}")
    for col in ("label", "group", "source", "video"):
        if col not in df.columns:
            continue
        n = df.groupby(["split", "path"], sort=False)[col].nunique(dropna=False)
        if (n > 1).any():
            split, path = n[n > 1].index[0]
            raise LogitsTableError(f"{where}: image {path} of split {split} has different "
                                   f"{col} values in different rows ({int((n > 1).sum())} "
                                   "image(s) like this)")
    models = list(dict.fromkeys(df["model"]))
    for split, part in df.groupby("split", sort=False):
        every = set(part["path"])
        for m in models:
            have = set(part.loc[part["model"] == m, "path"])
            if not have:
                raise LogitsTableError(f"{where}: model {m} has no rows for split {split} "
                                       f"(every model must score every image of every split)")
            if have != every:
                lack = sorted(every - have)
                raise LogitsTableError(f"{where}: model {m} lacks {len(lack)} of the "
                                       f"{len(every)} images of split {split}, e.g. {lack[:3]} "
                                       "(every model must score every image of every split)")


def _fit_split_mapping(splits: list[str], fit_split: str, where: str) -> dict[str, str]:
    """Table split -> stored split: the fit split becomes `validation`."""
    if fit_split not in splits:
        raise LogitsTableError(
            f"{where}: no '{fit_split}' split to fit the meta-learners on (splits: "
            f"{', '.join(splits)}); name the split to fit on with --fit-split")
    if OOF_SPLIT in splits:
        raise LogitsTableError(f"{where}: split name '{OOF_SPLIT}' is reserved for "
                               "out-of-fold scores; rename that split")
    if fit_split != FIT_SPLIT and FIT_SPLIT in splits:
        raise LogitsTableError(
            f"{where}: --fit-split {fit_split} is stored as '{FIT_SPLIT}', but the table "
            f"already has a split named '{FIT_SPLIT}'; rename one of them")
    return {s: (FIT_SPLIT if s == fit_split else s) for s in splits}


def check_table(raw: pd.DataFrame, where: str, fit_split: str = FIT_SPLIT,
                csv: bool = False, default_run: str = "imported") -> ImportedTable:
    """A raw table as a logits store plus per-image table, or a LogitsTableError."""
    df = _check_columns(raw, where, csv)
    _check_rows(df, where, csv)
    splits = list(dict.fromkeys(df["split"]))
    mapping = _fit_split_mapping(splits, fit_split, where)
    fit_labels = set(df.loc[df["split"] == fit_split, "label"])
    if len(fit_labels) < 2:
        only = "Real" if 1 in fit_labels else "Fake"
        raise LogitsTableError(f"{where}: split {fit_split} (the fit split) holds only {only} "
                               "images; the meta-learners need both Real and Fake images")
    df["split"] = df["split"].map(mapping)
    run = df["run"].fillna(default_run) if "run" in df.columns else default_run
    logits = sort_store(df.assign(run=run)[LOGIT_COLUMNS])
    img = df.drop_duplicates(["split", "path"]).copy()
    img["group"] = (img["group"].fillna(img["path"]) if "group" in img.columns
                    else img["path"])
    img["source"] = img["source"].fillna("") if "source" in img.columns else ""
    cols = ["split", "path", "label", "source", "group", *(["video"] if "video" in img else [])]
    images = img[cols].sort_values(["split", "path"], kind="stable").reset_index(drop=True)
    info = {"table": where, "fit_split": fit_split, "splits": mapping,
            "models": list(dict.fromkeys(df["model"])), "rows": int(len(df)),
            "images": int(len(images)), "defaults": {
                "run": "run" not in raw.columns, "group": "group" not in raw.columns,
                "source": "source" not in raw.columns}}
    return ImportedTable(logits, images, info)


def load_table(path: str | Path | list[Path], fit_split: str = FIT_SPLIT,
               formats: list[str] | None = None, dfb_data: Path | None = None
               ) -> ImportedTable:
    """Read and check one logits table, or several joined (nothing is written); ``formats``
    gives each table's format ('table' or 'dfb'; one applies to all)."""
    paths = [Path(p) for p in (path if isinstance(path, list) else [path])]
    formats = list(formats or ["table"])
    if len(formats) == 1:
        formats *= len(paths)
    if len(formats) != len(paths):
        raise LogitsTableError(f"--logits-format: give one format for all tables or one per "
                               f"table ({len(paths)} tables, {len(formats)} formats)")
    parts = []
    for p, fmt in zip(paths, formats, strict=True):
        raw = read_table(p)
        if fmt == "dfb":
            raw = to_logits_table(raw, str(p), p.name.split(".")[0],
                                  dataset_keys(dfb_data) if dfb_data else None)
        parts.append(raw)
    where = " + ".join(map(str, paths))
    raw = join(parts)
    imported = check_table(raw, where, fit_split,
                           csv=len(paths) == 1 and formats[0] == "table"
                           and ".csv" in paths[0].name.lower(),
                           default_run=paths[0].name.split(".")[0] or "imported")
    digests = [sha256_file(p) + (":dfb" if f == "dfb" else "")
               for p, f in zip(paths, formats, strict=True)]
    imported.info["sha256"] = digests[0] if len(digests) == 1 else ",".join(digests)
    return imported


def join(parts: list[pd.DataFrame]) -> pd.DataFrame:
    """Tables of several detectors as one: an image's group/source/video that one table
    gives and another lacks is filled in (values that differ are still refused by
    check_table); a DeepfakeBench image no table groups takes its video (its folder)."""
    raw = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    keys = [raw["split"].astype(str), raw["path"].astype(str)]
    for col in ("group", "source", "video"):
        if col in raw.columns and raw[col].isna().any():
            raw[col] = raw.groupby(keys, sort=False)[col].transform("first")
    if "video" in raw.columns and "group" in raw.columns:
        raw["group"] = raw["group"].fillna(raw["video"])
    return raw


def is_current(imported: ImportedTable, out: str | Path) -> bool:
    """OUT already holds this table's import (same checksum and fit split)."""
    out = Path(out)
    before = _previous_import(out)
    keys = ("sha256", "fit_split")
    return ((out / LOGITS_FILE).is_file() and (out / IMAGES_FILE).is_file()
            and all(k in before and before[k] == imported.info.get(k) for k in keys))


def write_run(imported: ImportedTable, out: str | Path, overwrite: bool = False) -> bool:
    """Write the run folder OUT (logits.parquet, images.parquet, imported.json). An OUT
    already imported from the same table (same checksum and fit split) is left as it is;
    returns whether anything was written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise LogitsTableError(f"--out {out}: exists and is not a folder")
    if (out / CONFIG_FILE).is_file():
        raise LogitsTableError(f"--out {out}: is a trained run folder ({CONFIG_FILE}); "
                               "import a logits table into a folder of its own")
    if is_current(imported, out):
        return False
    if (out / LOGITS_FILE).is_file() and not overwrite:
        raise LogitsTableError(
            f"--out {out}: already holds {LOGITS_FILE} from "
            f"{_previous_import(out).get('table', 'elsewhere')}, not from this table; pass "
            "--overwrite to replace it (and what was computed from it) or choose another --out")
    validate_store(imported.logits, str(out / LOGITS_FILE))
    atomic_write(out / LOGITS_FILE, lambda p: imported.logits.to_parquet(p, index=False))
    atomic_write(out / IMAGES_FILE, lambda p: imported.images.to_parquet(p, index=False))
    write_json(out / IMPORTED_FILE, imported.info)
    return True


def _previous_import(out: Path) -> dict[str, Any]:
    path = out / IMPORTED_FILE
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def import_for_command(table: Path | list[Path], out: Path | None, fit_split: str,
                       overwrite: bool, output: str, what: str,
                       formats: list[str] | None = None, dfb_data: Path | None = None
                       ) -> Path:
    """Check `table`, refuse early if OUT/`output` (the command's own folder) exists without
    --overwrite, then write the run folder; returns OUT for the command to run on."""
    if out is None:
        raise LogitsTableError("--logits needs --out DIR (the folder to write the run into)")
    out = Path(out)
    imported = load_table(table, fit_split, formats, dfb_data)
    tables = " --logits ".join(map(str, table if isinstance(table, list) else [table]))
    guard_overwrite(out / output, overwrite, what)
    if output != STACK_DIR and (out / STACK_DIR).is_dir() and not is_current(imported, out):
        raise LogitsTableError(
            f"--out {out}: its {STACK_DIR}/ was computed from another table; run "
            f"`python -m ensemble_dfd.stack --logits {tables} --out {out} --overwrite` first")
    write_run(imported, out, overwrite)
    return out
