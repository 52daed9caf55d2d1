"""The run folder: its layout and the decisions recorded in it, owned in one place.

Every command asks a `Run` where things are (config, trained models, logits, the stack's
files) and what was decided (best single model, recommended ensemble, thresholds, fitted
learners) instead of re-deriving it; `StackInfo` is the one parser of `stack/stack.json`.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ensemble_dfd.config import RunConfig, load_recorded
from ensemble_dfd.ensemble.saved import (
    LoadedMetaLearner,
    learner_file,
    load_learners,
    saved_names,
)
from ensemble_dfd.errors import UserError
from ensemble_dfd.stacking import metrics as M
from ensemble_dfd.stacking.logits import (
    IMAGES_FILE,
    LOGITS_FILE,
    StoreError,
    logit_matrix,
    model_sort_key,
)
from ensemble_dfd.stacking.power import headline_rows
from ensemble_dfd.training.modeldir import MODELS_DIR, ModelDir

CONFIG_FILE = "config.toml"
STACK_DIR = "stack"
CLAIMS_FILE = "claims.json"  # stack/claims.json: power per split, who beats the best model
CROSS_FILE = "cross_dataset.csv"  # stack/cross_dataset.csv: train set x evaluation set AUC
STACK_FILE = "stack.json"
LEARNERS_DIR = "learners"
PREDICTIONS_FILE = "predictions.parquet"
REPORT_DIR = "report"
FIT_SPLIT = "validation"  # meta-learners are fit, thresholds and the best model chosen here
OOF_SPLIT = "validation_oof"  # out-of-fold rows of the fit split
DEFAULT_LEARNER = "soft_vote"  # the ensemble used when the stack recommends none


class RunError(UserError, ValueError):
    """A run folder that cannot be used (the message names the file)."""


# ---------------------------------------------------------------- decisions (pure)


def recommend(table: pd.DataFrame, learners: Sequence[str]) -> str | None:
    """The ensemble with the best out-of-fold validation accuracy (ties: AUC) — chosen
    without looking at any split it will be judged on; predict and report default to it."""
    table = headline_rows(table)
    oof = table[(table["split"] == OOF_SPLIT) & table["predictor"].isin(list(learners))]
    if oof.empty:
        return None
    order = oof.sort_values(["acc", "auc"], ascending=False, kind="stable")
    return str(order["predictor"].iloc[0])


def train_set_name(run_dir: Path) -> str:
    """The name of the run's training data folder (its config's pipeline.data or videos);
    "unknown" when the run folder has no config naming it."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        return "unknown"
    p = load_recorded(path).pipeline
    src = Path(p.data or p.videos or p.root) if (p.data or p.videos or p.root) else None
    if src is None:
        return "unknown"
    return (src.parent if src.suffix == ".csv" else src).resolve().name


def choose_best_single(y: np.ndarray, X: np.ndarray, models: Sequence[str],
                       thresholds: dict[str, float]) -> str:
    """Highest validation accuracy at its threshold; ties go to AUC, then model order."""
    keys = []
    for k, m in enumerate(models):
        acc = M.seven_metrics(y, X[:, k], thresholds[m])["acc"]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", M.OneClassWarning)
            auc = M.roc_auc(y, X[:, k])
        keys.append((-acc, -(auc if np.isfinite(auc) else 0.0), k))
    return models[min(keys)[2]]


@dataclass(frozen=True)
class StackInfo:
    """What the stack step decided (the typed content of stack/stack.json)."""

    models: list[str] = field(default_factory=list)
    learners: list[str] = field(default_factory=list)
    best_single: str | None = None
    recommended: str | None = None
    thresholds: dict[str, float] = field(default_factory=dict)  # logit scale, per predictor
    threshold_rule: str = "fixed"

    @classmethod
    def parse(cls, obj: Any, where: str | Path) -> StackInfo:
        if not isinstance(obj, dict):
            raise RunError(f"{where}: expected a JSON object")
        try:
            return cls(list(obj.get("models", [])), list(obj.get("learners", [])),
                       obj.get("best_single") or None, obj.get("recommended") or None,
                       {str(k): float(v) for k, v in obj.get("thresholds", {}).items()},
                       str(obj.get("threshold_rule", "fixed")))
        except (TypeError, ValueError, AttributeError) as exc:
            raise RunError(f"{where}: unusable content: {exc}") from None

    @property
    def primary(self) -> str | None:
        """The ensemble the run stands behind: the recommended one, else soft voting, else
        the first learner (None without learners)."""
        if self.recommended:
            return self.recommended
        if DEFAULT_LEARNER in self.learners:
            return DEFAULT_LEARNER
        return self.learners[0] if self.learners else None

    def threshold(self, name: str) -> float:
        return float(self.thresholds.get(name, 0.0))


# ---------------------------------------------------------------- the folder


def trained_models(run_dir: Path, refs: Sequence[str] | None = None) -> dict[str, ModelDir]:
    """ref -> ModelDir of every finished model in run_dir/models (optionally a subset), in
    model order."""
    found = {m.ref: m for m in ModelDir.all_in(run_dir) if m.loadable()}
    if refs:
        missing = [r for r in refs if r not in found]
        if missing:
            raise StoreError(f"{run_dir}: no finished model for {', '.join(missing)}")
        found = {r: found[r] for r in refs}
    if not found:
        raise StoreError(f"{run_dir / MODELS_DIR}: no finished models to collect from")
    return dict(sorted(found.items(), key=lambda kv: model_sort_key(kv[0])))


class Run:
    """One run folder: where each step's files live and what the steps decided."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.config_path = self.path / CONFIG_FILE
        self.models_dir = self.path / MODELS_DIR
        self.logits_path = self.path / LOGITS_FILE
        self.images_path = self.path / IMAGES_FILE
        self.stack_dir = self.path / STACK_DIR
        self.learners_dir = self.stack_dir / LEARNERS_DIR
        self.report_dir = self.path / REPORT_DIR

    def learner_path(self, name: str) -> Path:
        return learner_file(self.learners_dir / name)

    # -- contents --------------------------------------------------------------------
    def config(self) -> RunConfig:
        if not self.config_path.is_file():
            raise RunError(f"{self.path}: no {CONFIG_FILE} (is it a run folder?)")
        return load_recorded(self.config_path)

    def model(self, ref: str) -> ModelDir:
        """The folder of one model (models/<ref>/), finished or not."""
        return ModelDir.of(self.path, ref)

    def trained_models(self, refs: Sequence[str] | None = None) -> dict[str, ModelDir]:
        return trained_models(self.path, refs)

    @cached_property
    def stack(self) -> StackInfo | None:
        """The stack step's decisions; None before the stack step has run."""
        path = self.stack_dir / STACK_FILE
        if not path.is_file():
            return None
        try:
            obj = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise RunError(f"{path}: not valid JSON: {exc}") from None
        return StackInfo.parse(obj, path)

    def saved_learners(self) -> list[str]:
        """Names of the fitted meta-learners saved by the stack step."""
        return saved_names(self.learners_dir)

    def load_learners(self, models: Sequence[str], names: Sequence[str] | None = None,
                      warn: Callable[[str], None] | None = None
                      ) -> dict[str, LoadedMetaLearner]:
        """Saved meta-learners whose base models are all among `models`, by name."""
        return load_learners(self.learners_dir, models, names, warn)

    def predictions(self) -> pd.DataFrame | None:
        """stack/predictions.parquet (one logit column per predictor), if written."""
        path = self.stack_dir / PREDICTIONS_FILE
        return pd.read_parquet(path) if path.is_file() else None

    def best_single(self, store: pd.DataFrame | None = None) -> str | None:
        """The best single model chosen on validation: the stack step's choice, else the
        same rule at threshold 0 on the store's validation logits (None without them)."""
        if self.stack is not None and self.stack.best_single:
            return self.stack.best_single
        if store is None or FIT_SPLIT not in set(store["split"]):
            return None
        val = logit_matrix(store, FIT_SPLIT)
        return choose_best_single(val.y, val.X, val.models, {m: 0.0 for m in val.models})
