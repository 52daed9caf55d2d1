"""One trained model's folder, `RUN/models/<ref>/`: the one owner of its files.

    model.keras         the trained model (written before done.json)
    checkpoint.keras    the last finished epoch while training (removed when done)
    state.json          {"phase", "epoch"} of that checkpoint (removed when done)
    history.csv         one row per epoch (HISTORY_COLUMNS)
    params.json         parameter counts before/after unfreezing, the model's settings
    done.json           the finished model's summary: the record that it is finished
    curves.png          its training curves
    tuning/             the keras-tuner search (best_hparams.json, trials.csv)
    model.onnx          the inference artifact, and model.onnx.json: what it was made
                        from (the Keras file's size and mtime) and how it was checked

Every other module asks a `ModelDir` (``Run.model(ref)``) for these paths and records;
none spells the file names or reads done.json itself. No TensorFlow here.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ensemble_dfd.errors import UserError
from ensemble_dfd.runio import RunExistsError, atomic_write, read_json, sha256_file, write_json

MODELS_DIR = "models"  # RUN/models/<ref>/
MODEL_FILE = "model.keras"
CHECKPOINT_FILE = "checkpoint.keras"
STATE_FILE = "state.json"
DONE_FILE = "done.json"
HISTORY_FILE = "history.csv"
PARAMS_FILE = "params.json"
CURVES_FILE = "curves.png"
TUNING_DIR = "tuning"
BEST_HPARAMS_FILE = "best_hparams.json"  # in tuning/
TRIALS_FILE = "trials.csv"  # in tuning/
ONNX_FILE = "model.onnx"
ONNX_INFO_FILE = "model.onnx.json"
HISTORY_COLUMNS = ["epoch", "phase", "loss", "accuracy", "val_loss", "val_accuracy",
                   "seconds", "images_per_second", "lr"]
# what a reset (retraining with --overwrite) removes; model.keras is replaced when the new
# model is saved, and its ONNX artifact is then stale (ignored) until exported again
PROGRESS_FILES = (DONE_FILE, STATE_FILE, CHECKPOINT_FILE, HISTORY_FILE)


class ModelDirError(UserError, ValueError):
    """A model folder whose records cannot be read (the message names the file)."""


@dataclass(frozen=True)
class ModelDir:
    """RUN/models/<ref>/: its paths (properties), its state (finished, in progress) and its
    records (done.json, state.json, history.csv, params.json, the artifact's info)."""

    path: Path

    @classmethod
    def of(cls, run_dir: str | Path, ref: str) -> ModelDir:
        return cls(Path(run_dir) / MODELS_DIR / ref)

    @classmethod
    def all_in(cls, run_dir: str | Path) -> list[ModelDir]:
        """Every model folder of a run (finished or not), in folder-name order."""
        root = Path(run_dir) / MODELS_DIR
        return [cls(p) for p in sorted(root.iterdir()) if p.is_dir()] if root.is_dir() else []

    @property
    def ref(self) -> str:
        return self.path.name

    # -- paths -----------------------------------------------------------------------
    @property
    def model_file(self) -> Path:
        return self.path / MODEL_FILE

    @property
    def checkpoint_file(self) -> Path:
        return self.path / CHECKPOINT_FILE

    @property
    def state_file(self) -> Path:
        return self.path / STATE_FILE

    @property
    def done_file(self) -> Path:
        return self.path / DONE_FILE

    @property
    def history_file(self) -> Path:
        return self.path / HISTORY_FILE

    @property
    def params_file(self) -> Path:
        return self.path / PARAMS_FILE

    @property
    def curves_file(self) -> Path:
        return self.path / CURVES_FILE

    @property
    def tuning_dir(self) -> Path:
        return self.path / TUNING_DIR

    @property
    def best_hparams_file(self) -> Path:
        """The tuning search's best values (tune.tune_model)."""
        return self.tuning_dir / BEST_HPARAMS_FILE

    @property
    def trials_file(self) -> Path:
        return self.tuning_dir / TRIALS_FILE

    @property
    def onnx_file(self) -> Path:
        return self.path / ONNX_FILE

    @property
    def onnx_info_file(self) -> Path:
        return self.path / ONNX_INFO_FILE

    @property
    def onnx_tmp_file(self) -> Path:
        """Where the exporter writes the artifact before it passes its check."""
        return self.path / (ONNX_FILE + ".tmp")

    # -- state -----------------------------------------------------------------------
    def finished(self) -> bool:
        """Whether training finished (done.json, written last, exists)."""
        return self.done_file.is_file()

    def loadable(self) -> bool:
        """Finished, with its model file present: what collect, predict and serve use."""
        return self.finished() and self.model_file.is_file()

    def begin(self, overwrite: bool = False) -> bool:
        """Ready the folder for training. False, touching nothing, when the model finished
        and overwrite is not set; with overwrite its record and progress go first."""
        if self.finished() and not overwrite:
            return False
        if overwrite:
            self.reset()
        self.path.mkdir(parents=True, exist_ok=True)
        return True

    def reset(self) -> None:
        """Forget the finished record and any progress (retraining starts from scratch)."""
        for name in PROGRESS_FILES:
            (self.path / name).unlink(missing_ok=True)

    # -- done.json -------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """The finished model's record (done.json)."""
        return self._read(self.done_file)

    def image_size(self) -> int | None:
        """The input size the trainer recorded, without loading the model; None when the
        record lacks it (the model is then asked after loading)."""
        try:
            size = self.summary().get("image_size")
            return int(size) if size else None
        except (ModelDirError, OSError, TypeError, ValueError):
            return None

    def finish(self, summary: dict[str, Any]) -> dict[str, Any]:
        """Write the record that the model is finished, then drop the checkpoint and its
        state (done.json is the record now). A finished record is never replaced here:
        `begin(overwrite=True)` removes it first."""
        if self.finished():
            raise RunExistsError(f"{self.done_file}: the model is finished already; "
                                 "pass --overwrite to retrain it")
        write_json(self.done_file, summary)
        self.checkpoint_file.unlink(missing_ok=True)
        self.state_file.unlink(missing_ok=True)
        return summary

    def update_summary(self, **extra: Any) -> dict[str, Any]:
        """Add keys (memory, export figures) to a finished model's record."""
        summary = {**self.summary(), **extra}
        write_json(self.done_file, summary)
        return summary

    # -- progress while training -----------------------------------------------------
    def progress(self) -> dict[str, Any] | None:
        """{"phase", "epoch"} of the last checkpoint, when one can be resumed from."""
        if not (self.state_file.is_file() and self.checkpoint_file.is_file()):
            return None
        return self._read(self.state_file)

    def write_state(self, phase: int, epoch: int) -> None:
        write_json(self.state_file, {"phase": phase, "epoch": epoch})

    def append_history(self, row: dict[str, Any]) -> None:
        """One epoch's row of history.csv (the header with the first row)."""
        new = not self.history_file.exists()
        with self.history_file.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
            if new:
                writer.writeheader()
            writer.writerow(row)

    def trim_history(self, epochs_done: int) -> None:
        """Drop history rows past the last checkpoint (an epoch that ran but was not
        saved)."""
        if not self.history_file.exists():
            return
        with self.history_file.open() as fh:
            rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= epochs_done]
        _write_rows(self.history_file, rows)

    def clear_history(self) -> None:
        self.history_file.unlink(missing_ok=True)

    def history(self) -> Any:
        """history.csv as a pandas DataFrame."""
        import pandas as pd

        return pd.read_csv(self.history_file)

    def has_history(self) -> bool:
        return self.history_file.is_file()

    # -- params.json -----------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return self._read(self.params_file) if self.params_file.exists() else {}

    def write_params(self, params: dict[str, Any]) -> None:
        write_json(self.params_file, params)

    # -- the ONNX artifact -----------------------------------------------------------
    def model_stamp(self) -> dict[str, int]:
        """What identifies the Keras file an artifact was made from."""
        st = self.model_file.stat()
        return {"keras_size": st.st_size, "keras_mtime_ns": st.st_mtime_ns}

    def fresh_artifact(self) -> Path | None:
        """The ONNX file if it exists, was made from this very model file (a retrained
        model makes it stale: it is then ignored) and has its sha256 recorded (one exported
        before hashes were recorded counts as absent, so base_train exports it again)."""
        if not (self.onnx_file.is_file() and self.onnx_info_file.is_file()
                and self.model_file.is_file()):
            return None
        try:
            meta = json.loads(self.onnx_info_file.read_text())
        except (OSError, json.JSONDecodeError):
            return None
        if not isinstance(meta, dict):
            return None
        if any(meta.get(k) != v for k, v in self.model_stamp().items()):
            return None
        if not meta.get("sha256"):  # exported before hashes were recorded: export again
            return None
        return self.onnx_file

    def needs_export(self) -> bool:
        """No fresh artifact, and no export of this very model file refused by its check
        (so a rerun does not convert and refuse it again; ``python -m ensemble_dfd.artifacts``
        still tries, and a retrained model is exported anew)."""
        if self.fresh_artifact() is not None:
            return False
        refused = self.summary().get("export_refused") if self.finished() else None
        return not (isinstance(refused, dict)
                    and all(refused.get(k) == v for k, v in self.model_stamp().items()))

    def refuse_artifact(self, reason: str) -> None:
        """Record in done.json that this model file's artifact failed its check."""
        if self.finished():
            self.update_summary(export_refused={**self.model_stamp(), "reason": reason})

    def artifact_info(self) -> dict[str, Any]:
        """The artifact's record (model.onnx.json)."""
        return self._read(self.onnx_info_file)

    def keep_artifact(self, tmp: Path, info: dict[str, Any]) -> dict[str, Any]:
        """Move a checked artifact into place and record it with the model file's stamp and its
        own sha256 (checked by the loader)."""
        os.replace(tmp, self.onnx_file)
        info = {**self.model_stamp(), **info, "sha256": sha256_file(self.onnx_file)}
        self.onnx_info_file.write_text(json.dumps(info, indent=2) + "\n")
        return info

    # -- helpers ---------------------------------------------------------------------
    def _read(self, path: Path) -> dict[str, Any]:
        try:
            obj = read_json(path)
        except FileNotFoundError:
            raise ModelDirError(f"{path}: missing") from None
        except json.JSONDecodeError as exc:
            raise ModelDirError(f"{path}: not valid JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ModelDirError(f"{path}: expected a JSON object")
        return obj


def _write_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    def write(p: Path) -> None:
        with p.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(rows)

    atomic_write(path, write)
