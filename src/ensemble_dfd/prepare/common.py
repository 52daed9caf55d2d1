"""Shared pieces of `prepare`: table columns, logging, problems, output-folder rules."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm import tqdm

from ensemble_dfd.data import manifest as mf
from ensemble_dfd.errors import UserError
from ensemble_dfd.runio import (
    RunExistsError,
    guard_overwrite,
    read_json,
    sha256_file,
    write_json,
    write_text,
)

MARKER = ".prepare.json"


# Aligned face crops look alike to a 64-bit dHash: on dfd-mini, pairs 3-4 bits apart are
# different people; re-encoded or rescaled copies of one image stay within 2.
NEAR_THRESHOLD = 2


LOG_COLUMNS = ("video", "label", "source", "group", "frames_read", "frames_kept", "faces_saved",
               "dropped_no_face", "dropped_multi_face", "unreadable", "error", "status")


FACE_COLUMNS = ("path", "video", "frame_index", "label", "source", "group",
                "top", "right", "bottom", "left", "width", "height")


FRAME_COLUMNS = ("path", "video", "frame_index", "label", "source", "group")


# What each command may write into --out: --overwrite removes these and nothing else.
OUTPUTS = {
    "frames": ("frames", "frames.csv", "frame_log.csv", "report.json", "prepare.log",
               "index.csv", "index.json", "missing.csv"),
    "faces": ("crops", "frames", "faces.csv", "face_log.csv", "report.json", "prepare.log",
              "index.csv", "index.json", "missing.csv"),
    "split": ("train", "validation", "test", "manifest.csv", "composition.csv",
              "leakage.csv", "report.json", "prepare.log"),
}


OUTPUTS["all"] = tuple(dict.fromkeys(("faces", "missing.csv") + OUTPUTS["split"]))
OUTPUTS["import-dfb"] = OUTPUTS["all"]


class NothingUsable(UserError, RuntimeError):
    """The run finished but produced nothing (exit code 2)."""

    def __str__(self) -> str:
        return f"nothing usable produced: {super().__str__()}"


def log(msg: str) -> None:
    # tqdm.write keeps messages from breaking a progress bar in a terminal
    tqdm.write(msg, file=sys.stderr)


def bar(iterable: Iterable[Any] | None = None, **kw: Any) -> tqdm:
    # disable=None: bars in a terminal, silent in logs and tests
    return tqdm(iterable, disable=None, file=sys.stderr, dynamic_ncols=True, **kw)


def label_text(label: int) -> str:
    return mf.class_name(label) if label in (0, 1) else ""


def write_csv(path: Path, df: pd.DataFrame) -> None:
    write_text(path, df.to_csv(index=False))


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _sorted(df: pd.DataFrame, key: str) -> pd.DataFrame:
    # workers finish in any order; files on disk should not depend on it
    return df.sort_values(key, kind="stable").reset_index(drop=True)


def file_sha256(path: Path) -> str:
    return sha256_file(path) if path.is_file() else ""


@dataclass
class Problems:
    """Inputs skipped, each with a message naming the file; printed as found."""

    items: list[dict[str, str]] = field(default_factory=list)

    def add(self, path: str | Path, reason: str, kind: str = "skipped") -> None:
        self.items.append({"path": str(path), "reason": reason, "kind": kind})
        log(f"{kind}: {path}: {reason}")

    def __len__(self) -> int:
        return len(self.items)


def _jsonable(obj: Any) -> Any:
    return json.loads(json.dumps(obj, default=str))


def open_output(out: Path, command: str, params: dict[str, Any], overwrite: bool) -> str:
    """Decide what to do with ``out``: 'fresh' (new run), 'resume' (same settings, not
    finished) or 'done' (same settings, finished). Raises RunExistsError when ``out`` holds
    anything else and ``overwrite`` is not set."""
    params = _jsonable(params)
    marker = out / MARKER
    if overwrite and out.exists():
        for name in (*OUTPUTS[command], MARKER):
            target = out / name
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    if marker.is_file() and not overwrite:
        try:
            old = read_json(marker)
        except (OSError, ValueError):
            old = {}
        if old.get("command") == command and old.get("params") == params:
            return "done" if old.get("status") == "finished" else "resume"
        if old.get("status") != "finished":
            changed = sorted(k for k in set(params) | set(old.get("params", {}))
                             if params.get(k) != old.get("params", {}).get(k))
            raise RunExistsError(
                f"{out}: holds an unfinished `prepare {old.get('command')}` run with other "
                f"settings ({', '.join(changed) or 'command'} differ); rerun it with the same "
                "settings to resume, or pass --overwrite to start again")
    guard_overwrite(out, overwrite, what="prepare output")
    out.mkdir(parents=True, exist_ok=True)
    write_json(marker, {"command": command, "params": params, "status": "running"})
    return "fresh"


def finish_output(out: Path) -> None:
    marker = out / MARKER
    data = read_json(marker)
    data["status"] = "finished"
    write_json(marker, data)
