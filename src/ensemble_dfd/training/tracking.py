"""Experiment tracking: TensorBoard event files per model, under every Keras backend.

`tensorboard --logdir RUN/tb` shows, per model, ``RUN/tb/<ref>/train`` and ``.../validation``
(each epoch's ``epoch_loss`` and ``epoch_accuracy``; train also ``epoch_learning_rate``,
``epoch_images_per_second`` and ``epoch_seconds``, Keras' TensorBoard names, so the models
overlay in one chart per metric) and ``RUN/tb/<ref>`` itself (the resolved hyperparameters
for the HParams tab and as a text table). `stack` writes its headline comparison to
``RUN/tb/stack``.

Keras' own TensorBoard callback needs TensorFlow; here the event files are written from the
`tensorboard` package's protocol buffers and record writer, which do not import TensorFlow,
so JAX and PyTorch runs get the same files. ``train.tracking = []`` turns it off.

``"mlflow"`` in ``train.tracking`` also logs the same to a local MLflow store, RUN/mlruns
(training.mlflow_tracking; mlflow is imported only then).
"""

from __future__ import annotations

import math
import os
import socket
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

TB_DIR = "tb"
TRACKERS = ("tensorboard", "mlflow")
# history columns -> (sub-run, TensorBoard tag)
EPOCH_TAGS = {"loss": ("train", "epoch_loss"), "accuracy": ("train", "epoch_accuracy"),
              "val_loss": ("validation", "epoch_loss"),
              "val_accuracy": ("validation", "epoch_accuracy"),
              "lr": ("train", "epoch_learning_rate"),
              "images_per_second": ("train", "epoch_images_per_second"),
              "seconds": ("train", "epoch_seconds")}


def tensorboard_available() -> bool:
    try:
        from tensorboard.compat.proto import event_pb2  # noqa: F401
    except ImportError:
        return False
    return True


class EventWriter:
    """One TensorBoard event file (``events.out.tfevents.*``) in `logdir`, appended record
    by record and flushed after each write, so a killed run keeps what it logged."""

    def __init__(self, logdir: Path, start_step: int | None = None):
        from tensorboard.compat.proto import event_pb2
        from tensorboard.summary.writer.record_writer import RecordWriter

        self._event_pb2 = event_pb2
        logdir.mkdir(parents=True, exist_ok=True)
        name = (f"events.out.tfevents.{time.time():.6f}.{socket.gethostname()}."
                f"{os.getpid()}.ensemble_dfd")
        self.path = logdir / name
        self._writer = RecordWriter(self.path.open("wb"))
        self._write(event_pb2.Event(wall_time=time.time(), file_version="brain.Event:2"))
        if start_step is not None:  # a resumed run: TensorBoard drops what an earlier
            # process logged from this step on (an epoch that ran but was not checkpointed,
            # or a whole earlier attempt when it starts at 1)
            self._write(event_pb2.Event(wall_time=time.time(), step=start_step,
                                        session_log=event_pb2.SessionLog(
                                            status=event_pb2.SessionLog.START)))

    def _write(self, event: Any) -> None:
        self._writer.write(event.SerializeToString())
        self._writer.flush()

    def summary(self, summary: Any, step: int) -> None:
        self._write(self._event_pb2.Event(wall_time=time.time(), step=step, summary=summary))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        from tensorboard.compat.proto import summary_pb2

        summary = summary_pb2.Summary(value=[
            summary_pb2.Summary.Value(tag=tag, simple_value=float(v))
            for tag, v in values.items() if v is not None and math.isfinite(float(v))])
        self.summary(summary, step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        from tensorboard.plugins.text.summary_v2 import text_pb

        self.summary(text_pb(tag, text), step)

    def hparams(self, hparams: Mapping[str, Any], group: str) -> None:
        """The HParams tab's session start (what `hparams.summary.session_start_pb` writes,
        built here without TensorFlow)."""
        from tensorboard.compat.proto import summary_pb2
        from tensorboard.plugins.hparams import metadata, plugin_data_pb2

        info = plugin_data_pb2.SessionStartInfo(group_name=group, start_time_secs=time.time())
        for key, value in hparams.items():
            if isinstance(value, bool):
                info.hparams[key].bool_value = value
            elif isinstance(value, int | float):
                info.hparams[key].number_value = float(value)
            else:
                info.hparams[key].string_value = str(value)
        meta = metadata.create_summary_metadata(
            plugin_data_pb2.HParamsPluginData(session_start_info=info))
        self.summary(summary_pb2.Summary(value=[summary_pb2.Summary.Value(
            tag=metadata.SESSION_START_INFO_TAG, metadata=meta,
            tensor=metadata.NULL_TENSOR)]), 0)

    def close(self) -> None:
        self._writer.close()


def configured_trackers(train: Any) -> set[str]:
    """The trackers a TrainConfig names, its per-model overrides' included."""
    return {*train.tracking, *(t for over in train.per_model.values()
                               for t in over.get("tracking", ()))}


def prepare_tracking(run_dir: Path, trackers: Iterable[str]) -> None:
    """Before any model trains: a ConfigError when "mlflow" is configured but not installed;
    with mlflow, the run folder's store and experiment are made once here, not by models
    training side by side (cluster workers)."""
    if "mlflow" in set(trackers):
        from ensemble_dfd.training.mlflow_tracking import open_store

        open_store(run_dir)  # ConfigError when mlflow cannot be imported


def plan_hparams(plan: Any, backend: str, n_train: int) -> dict[str, Any]:
    """One model's hyperparameters as trained: its plan's train settings (per-model
    overrides and a tuning result applied) and resolved values (size, fine_tune_at, ...)."""
    import dataclasses

    keep = {k: v for k, v in dataclasses.asdict(plan.train).items()
            if k not in ("models", "per_model") and isinstance(v, str | int | float | bool)}
    return {**keep, "ref": plan.ref, "backbone": plan.name, "image_size": plan.image_size,
            "fine_tune_at": plan.fine_tune_at, "batch_size": plan.batch_size,
            "seed": plan.seed, "keras_backend": backend, "n_train": n_train}


def markdown_table(values: Mapping[str, Any]) -> str:
    return "| key | value |\n|---|---|\n" + "\n".join(
        f"| {k} | {v} |" for k, v in sorted(values.items()))


class ModelTracker:
    """One model's tracking: hyperparameters once per process, then one call per epoch with
    the history row. Silent (does nothing) when no tracker is configured. With "mlflow",
    the MLflow store is RUN/mlruns beside `tb_root` (RUN/tb); a missing mlflow package is a
    ConfigError here, before training."""

    def __init__(self, tb_root: Path | None, ref: str, trackers: Iterable[str] = (),
                 log: Callable[[str], None] = print):
        self.ref, self.log = ref, log
        self.trackers = set(trackers)
        if "tensorboard" in self.trackers and not tensorboard_available():
            log("warning: train.tracking: the tensorboard package is not installed "
                "(pip install tensorboard): no event files")
            self.trackers.discard("tensorboard")
        self.logdir = tb_root / ref if tb_root is not None else None
        self._writers: dict[str, EventWriter] = {}
        self._first_step = 1
        self.mlflow: Any = None
        if "mlflow" in self.trackers and tb_root is not None:
            from ensemble_dfd.training.mlflow_tracking import MlflowModelRun

            self.mlflow = MlflowModelRun(tb_root.parent, ref, log)  # ConfigError: missing

    def start(self, hparams: Mapping[str, Any], epochs_done: int) -> None:
        """Record the resolved hyperparameters; epochs_done > 0: a resumed run. TensorBoard
        drops what an earlier attempt logged from the next epoch on."""
        self._first_step = epochs_done + 1
        flat = {k: v for k, v in hparams.items() if isinstance(v, str | int | float | bool)}
        if "tensorboard" in self.trackers and self.logdir is not None:
            top = self._writer("")
            top.hparams(flat, self.ref)
            top.text("hparams", markdown_table(flat))
        if self.mlflow is not None:
            self.mlflow.start(flat, epochs_done)

    def _writer(self, sub: str) -> EventWriter:
        if sub not in self._writers:
            assert self.logdir is not None
            self._writers[sub] = EventWriter(self.logdir / sub if sub else self.logdir,
                                             self._first_step)
        return self._writers[sub]

    def epoch(self, row: Mapping[str, Any]) -> None:
        """One finished epoch's history row (epoch, loss, accuracy, val_*, lr, ...)."""
        step = int(row["epoch"])
        if "tensorboard" in self.trackers and self.logdir is not None:
            for sub in ("train", "validation"):
                values = {tag: row[col] for col, (s, tag) in EPOCH_TAGS.items()
                          if s == sub and col in row}
                self._writer(sub).scalars(values, step)
        if self.mlflow is not None:
            self.mlflow.epoch(row)

    def close(self, failed: bool = False) -> None:
        """End the model's tracking; `failed`: its training raised (MLflow: FAILED)."""
        for w in self._writers.values():
            w.close()
        self._writers.clear()
        if self.mlflow is not None:
            self.mlflow.close(failed)


COMPARISON_KEYS = ("split", "level", "source")
COMPARISON_METRICS = ("acc", "auc", "mcc", "logloss")


def comparison_scalars(table: Any) -> dict[str, float]:
    """Each comparison row's metrics, tagged ``<split>_<level>_<source>/<metric>/<predictor>``
    (what TensorBoard and MLflow both get)."""
    keys = [c for c in COMPARISON_KEYS if c in table.columns]
    metrics = [c for c in COMPARISON_METRICS if c in table.columns]
    out: dict[str, float] = {}
    if "predictor" in table.columns:
        for _, row in table.iterrows():
            where = "_".join(str(row[k]) for k in keys) or "all"
            out.update({f"{where}/{m}/{row['predictor']}": float(row[m]) for m in metrics
                        if _number(row[m])})
    return out


def comparison_text(table: Any, headline: str = "") -> str:
    """The headline and the comparison's main columns as a Markdown table."""
    from ensemble_dfd.reports.training import markdown

    shown = [c for c in (*COMPARISON_KEYS, "predictor", "kind", "n", *COMPARISON_METRICS,
                         "acc_lo", "acc_hi") if c in table.columns]
    return (f"**Headline:** {headline}\n\n" if headline else "") + markdown(table[shown])


def write_comparison(run_dir: Path, table: Any, headline: str = "",
                     log: Callable[[str], None] = print) -> Path | None:
    """`stack`'s comparison (its DataFrame) in RUN/tb/stack, replacing what an earlier
    stack wrote there: the headline and the main columns as a text table, and each row's
    metrics as scalars tagged ``<split>_<level>_<source>/<metric>/<predictor>`` (step 0)."""
    if not tensorboard_available() or table is None or len(table) == 0:
        return None
    folder = run_dir / TB_DIR / "stack"
    for old in folder.glob("events.out.tfevents.*"):
        old.unlink()
    writer = EventWriter(folder)
    try:
        writer.text("comparison", comparison_text(table, headline))
        writer.scalars(comparison_scalars(table), 0)
    finally:
        writer.close()
    log(f"comparison for TensorBoard in {folder}")
    return folder


def track_comparison(run_dir: Path, trackers: Iterable[str], table: Any, headline: str = "",
                     log: Callable[[str], None] = print) -> None:
    """`stack`'s comparison to each configured tracker. A missing mlflow package is a
    warning here (the comparison is in RUN/stack either way)."""
    trackers = set(trackers)
    if "tensorboard" in trackers:
        write_comparison(run_dir, table, headline, log)
    if "mlflow" not in trackers or table is None or len(table) == 0:
        return
    from ensemble_dfd.training.mlflow_tracking import INSTALL, log_comparison, mlflow_installed

    if not mlflow_installed():
        log(f"warning: train.tracking names mlflow, which is not installed ({INSTALL}): "
            "the comparison is not logged to MLflow")
        return
    log_comparison(run_dir, comparison_scalars(table), comparison_text(table, headline),
                   headline, log)


def _number(value: Any) -> bool:
    import numbers

    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _file_events(path: Path) -> list[Any]:
    """The Events of one event file, each record checked against its CRCs."""
    import struct

    from tensorboard.compat.proto import event_pb2
    from tensorboard.compat.tensorflow_stub.pywrap_tensorflow import masked_crc32c

    data, pos, events = path.read_bytes(), 0, []
    while pos < len(data):
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if crc != masked_crc32c(header) or body_crc != masked_crc32c(body):
            raise ValueError(f"{path}: the record at byte {pos} fails its CRC")
        events.append(event_pb2.Event.FromString(body))
        pos += 16 + length
    return events


def read_events(logdir: Path) -> dict[str, list[Any]]:
    """{sub-run: its Events in file order} under `logdir` ("." for logdir itself)."""
    out: dict[str, list[Any]] = {}
    for path in sorted(logdir.rglob("events.out.tfevents.*")):
        sub = path.parent.relative_to(logdir).as_posix()
        out.setdefault(sub, []).extend(_file_events(path))
    return out


def read_scalars(logdir: Path) -> dict[str, dict[int, float]]:
    """{tag: {step: value}} of the scalars under `logdir`, the sub-run prefixing the tag
    (``train/epoch_loss``); a later record of the same step wins, as in TensorBoard."""
    out: dict[str, dict[int, float]] = {}
    for sub, events in read_events(logdir).items():
        for ev in events:
            for v in ev.summary.value:
                if v.WhichOneof("value") == "simple_value":
                    tag = v.tag if sub == "." else f"{sub}/{v.tag}"
                    out.setdefault(tag, {})[int(ev.step)] = float(v.simple_value)
    return out
