"""MLflow tracking (``train.tracking = ["tensorboard", "mlflow"]``): a local MLflow file
store in ``RUN/mlruns``, no server.

One experiment per run folder (named after it); in it one MLflow run per model, named by its
ref (and tagged ``ensemble_dfd.ref``), with the resolved hyperparameters as params (the dict
TensorBoard's HParams get) and each epoch's history row as metrics (step = epoch). A model
that finishes ends FINISHED, one whose training raises FAILED; a resumed model reopens its
run (found in the store by its tag: no file of ours) and logs the epochs it runs again a
second time at the same step (MLflow cannot drop values; the later one is the kept epoch).
`stack` logs its comparison into a run named "stack", replacing (soft-deleting) an earlier
one. Nothing here imports mlflow until a store is opened; `mlflow-skinny` (the ``mlflow``
extra) is enough to write, the full `mlflow` package has the UI.

MLflow 3 keeps its file store in maintenance mode and refuses it unless
``MLFLOW_ALLOW_FILE_STORE=true``: opening a store sets that (when unset) for this process.
"""

from __future__ import annotations

import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

MLRUNS_DIR = "mlruns"  # RUN/mlruns
INSTALL = 'pip install -e ".[mlflow]"'
REF_TAG = "ensemble_dfd.ref"
RESUMED_TAG = "ensemble_dfd.resumed_after_epoch"
STACK_RUN = "stack"
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "images_per_second",
                 "seconds")
MAX_PARAM_CHARS = 6000  # MLflow's limit on a param value
MAX_TAG_CHARS = 8000  # and on a tag value
BATCH = 100  # params per log_batch call (MLflow's limit)


def mlflow_installed() -> bool:
    """Whether `mlflow` can be imported (found without importing it)."""
    import importlib.util

    try:
        return importlib.util.find_spec("mlflow") is not None
    except (ImportError, ValueError):  # ValueError: a module entry without a spec
        return False


def missing_error() -> Exception:
    from ensemble_dfd.config import ConfigError

    return ConfigError(f"train.tracking names mlflow, which is not installed: {INSTALL} "
                       "(or leave mlflow out of train.tracking)")


def require_mlflow(trackers: Iterable[str]) -> None:
    """A ConfigError now (before any training) when "mlflow" is configured but missing."""
    if "mlflow" in set(trackers) and not mlflow_installed():
        raise missing_error()


def tracking_uri(run_dir: Path) -> str:
    """``file:`` URI of RUN/mlruns (absolute)."""
    return (Path(run_dir).resolve() / MLRUNS_DIR).as_uri()


def experiment_name(run_dir: Path) -> str:
    return Path(run_dir).resolve().name


def open_store(run_dir: Path) -> tuple[Any, str]:
    """(MlflowClient on RUN/mlruns, the run folder's experiment id), creating both."""
    # set before mlflow is imported: a research run logs to its own folder and nowhere else
    # (MLflow 3 otherwise sends usage telemetry from the client); the user's setting wins
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    try:
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise missing_error() from exc
    client = MlflowClient(tracking_uri=tracking_uri(run_dir))
    name = experiment_name(run_dir)
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        return client, exp.experiment_id
    try:
        return client, client.create_experiment(name)
    except MlflowException:  # another process created it meanwhile
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise
        return client, exp.experiment_id


def _runs(client: Any, experiment_id: str, ref: str) -> list[Any]:
    """The (active) runs tagged with `ref`, newest first."""
    return client.search_runs([experiment_id], filter_string=f"tags.`{REF_TAG}` = '{ref}'",
                              order_by=["attributes.start_time DESC"])


def _now_ms() -> int:
    return int(time.time() * 1000)


class MlflowModelRun:
    """One model's MLflow run: `start` opens (or reopens) it, `epoch` logs a history row,
    `close` ends it. Created only when "mlflow" is configured."""

    def __init__(self, run_dir: Path, ref: str, log: Callable[[str], None] = print):
        self.ref, self.log = ref, log
        self.client, self.experiment_id = open_store(run_dir)
        self.run_id: str | None = None

    def start(self, hparams: Mapping[str, Any], epochs_done: int) -> None:
        """A new run (epochs_done == 0; earlier runs of the model still RUNNING, left by a
        killed attempt, become KILLED), else the model's latest run, reopened."""
        runs = _runs(self.client, self.experiment_id, self.ref)
        if epochs_done > 0 and runs:
            self.run_id = runs[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
            self.client.set_tag(self.run_id, RESUMED_TAG, str(epochs_done))
            self._log_params(hparams, runs[0].data.params)
            return
        for old in runs:
            if old.info.status == "RUNNING":
                self.client.set_terminated(old.info.run_id, "KILLED")
        run = self.client.create_run(self.experiment_id, run_name=self.ref,
                                     tags={REF_TAG: self.ref})
        self.run_id = run.info.run_id
        self._log_params(hparams, {})

    def _log_params(self, hparams: Mapping[str, Any], logged: Mapping[str, str]) -> None:
        """Params as strings (cut to MLflow's limit); a resumed run keeps those it has
        (MLflow params cannot change): a differing value is reported, not logged."""
        from mlflow.entities import Param

        values = {k: str(v)[:MAX_PARAM_CHARS] for k, v in hparams.items()
                  if isinstance(v, str | int | float | bool)}
        changed = sorted(k for k, v in values.items() if k in logged and logged[k] != v)
        if changed:
            self.log(f"warning: {self.ref}: MLflow keeps the first values of "
                     f"{', '.join(changed)} (params cannot change on a resumed run)")
        new = [Param(k, v) for k, v in values.items() if k not in logged]
        for i in range(0, len(new), BATCH):
            self.client.log_batch(self.run_id, params=new[i:i + BATCH])

    def epoch(self, row: Mapping[str, Any]) -> None:
        """One history row's metrics at step = its epoch (NaN values left out)."""
        from mlflow.entities import Metric

        if self.run_id is None:
            return
        step, ts = int(row["epoch"]), _now_ms()
        metrics = [Metric(k, float(row[k]), ts, step) for k in EPOCH_METRICS
                   if k in row and _finite(row[k])]
        if metrics:
            self.client.log_batch(self.run_id, metrics=metrics)

    def close(self, failed: bool = False) -> None:
        if self.run_id is not None:
            self.client.set_terminated(self.run_id, "FAILED" if failed else "FINISHED")
            self.run_id = None


def _finite(value: Any) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def metric_key(key: str) -> str:
    """A metric name MLflow accepts (letters, digits, ``_ - . : /`` and spaces)."""
    return re.sub(r"[^\w\-.:/ ]", "_", key)


def log_comparison(run_dir: Path, scalars: Mapping[str, float], text: str, headline: str,
                   log: Callable[[str], None] = print) -> str:
    """`stack`'s comparison as the run "stack" of the run folder's experiment: `scalars`
    (tag -> value, what write_comparison writes to TensorBoard) as metrics at step 0, the
    headline as a tag and `text` (headline and table, Markdown) as the run's description.
    An earlier "stack" run is deleted (MLflow's soft delete; `mlflow gc` purges it).
    Returns the new run's id."""
    from mlflow.entities import Metric

    client, experiment_id = open_store(run_dir)
    for old in _runs(client, experiment_id, STACK_RUN):
        client.delete_run(old.info.run_id)
    run_id = client.create_run(experiment_id, run_name=STACK_RUN,
                               tags={REF_TAG: STACK_RUN}).info.run_id
    try:
        ts = _now_ms()
        metrics = [Metric(metric_key(k), float(v), ts, 0) for k, v in scalars.items()
                   if _finite(v)]
        for i in range(0, len(metrics), 1000):  # MLflow's limit per batch
            client.log_batch(run_id, metrics=metrics[i:i + 1000])
        client.set_tag(run_id, "headline", headline[:MAX_TAG_CHARS])
        client.set_tag(run_id, "mlflow.note.content", text[:MAX_TAG_CHARS])
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id, "FINISHED")
    log(f"comparison for MLflow in {tracking_uri(run_dir)} (run {STACK_RUN} {run_id})")
    return run_id
