"""Fit one backbone with the study's two-phase schedule, with per-epoch checkpoints.

Phase 1: base frozen (or all layers, for from-scratch CPU profiles), optimizer_frozen.
Phase 2: base.trainable=True, layers[:fine_tune_at] frozen again, optimizer_finetune,
continuing the epoch count. An interrupted run resumes from the last finished epoch.
"""

from __future__ import annotations

import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ensemble_dfd.data.stream import fit_arguments
from ensemble_dfd.runio import atomic_write
from ensemble_dfd.training import backbones
from ensemble_dfd.training.modeldir import ModelDir
from ensemble_dfd.training.plan import ModelPlan


@dataclass
class TrainData:
    """Images and labels (1 Real, 0 Fake): decoded uint8 arrays (N x S x S x 3) or
    ImageSplits streamed from disk (ensemble_dfd.data.stream)."""

    x_train: Any  # np.ndarray | ImageSplit
    y_train: np.ndarray
    x_val: Any
    y_val: np.ndarray


def make_optimizer(name: str, lr: float) -> Any:
    import keras

    return {"adam": keras.optimizers.Adam, "rmsprop": keras.optimizers.RMSprop,
            "sgd": keras.optimizers.SGD}[name](learning_rate=lr)


def compile_model(model: Any, optimizer: str, lr: float) -> None:
    import keras

    model.compile(
        optimizer=make_optimizer(optimizer, lr),
        loss=keras.losses.BinaryCrossentropy(from_logits=True),
        # threshold 0 on the logit = 0.5 on the sigmoid, the study's decision rule
        metrics=[keras.metrics.BinaryAccuracy(threshold=0.0, name="accuracy")],
    )
    flat_step_functions(model)


def flat_step_functions(model: Any) -> bool:
    """TensorFlow: train and validate with one graph per step, each traced once.

    Keras' TensorFlow trainer holds more graphs than its step needs: it calls the step's
    tf.function from a second tf.function that reads the iterator, the optimizer's
    variables are made inside the first trace (so TensorFlow traces it again without them),
    and a smaller last batch traces it once more. Here the optimizer is built first, the
    batch is taken from the iterator in Python (the path Keras takes for Python iterators,
    train_on_batch) and the step is traced once with its batch dimension open. EfficientNetB7
    (benchmarks/model_memory.py, `flat-fit` vs Keras' own): see results/benchmarks/README.md.
    Single device, one step per call (elsewhere Keras' own functions stay); `compile` resets
    them, so this follows every compile. Returns whether it was applied."""
    import keras

    if (keras.backend.backend() != "tensorflow" or model.run_eagerly
            or model.steps_per_execution != 1
            or model.distribute_strategy.num_replicas_in_sync != 1):
        return False
    if model.built and not model.optimizer.built:  # else its variables are made inside the
        model.optimizer.build(model.trainable_variables)  # first trace, and TF traces twice
    model.train_function = _one_graph(model.train_step, model.jit_compile)
    model.test_function = _one_graph(model.test_step, model.jit_compile)
    return True


def _one_graph(step: Callable, jit_compile: bool) -> Callable:
    """iterator -> step(next batch), traced on the first batch with its batch dimension
    left open, so that a smaller last batch runs the same graph."""
    import tensorflow as tf

    traced: list[Callable] = []

    def run(iterator: Any) -> Any:
        batch = next(iterator)
        if not traced:
            leaves = tf.nest.flatten(batch)
            if all(hasattr(t, "shape") and hasattr(t, "dtype") for t in leaves):
                spec = tf.nest.map_structure(
                    lambda t: tf.TensorSpec([None, *t.shape[1:]], t.dtype), batch)
                traced.append(tf.function(step, input_signature=[spec],
                                          jit_compile=jit_compile))
            else:  # e.g. a None sample weight: shapes are relaxed after a second one
                traced.append(tf.function(step, reduce_retracing=True,
                                          jit_compile=jit_compile))
        return traced[0](batch)

    run.traced = traced  # type: ignore[attr-defined]  # tests count the traces
    return run


def start_phase_two(model: Any, base: Any, ft_at: int, optimizer_before: str,
                    optimizer_after: str, lr: float) -> bool:
    """Unfreeze from ft_at and switch optimizer; return True when the model was recompiled.

    Recompiling makes new trainable flags take effect (Keras transfer-learning guide) but
    retraces the train and test steps, which costs minutes per large model on a CPU. When
    nothing was frozen and the optimizer stays the same, only the learning rate changes:
    it is assigned in place and the compiled steps (and the optimizer's moments) are kept.
    """
    trainable_before = [id(w) for w in model.trainable_weights]
    backbones.unfreeze(base, ft_at)
    unchanged = [id(w) for w in model.trainable_weights] == trainable_before
    if unchanged and optimizer_after == optimizer_before:
        model.optimizer.learning_rate.assign(lr)
        return False
    compile_model(model, optimizer_after, lr)
    return True


def register_layers() -> None:
    """Register the package's custom Keras layers (preprocess, augmentation) before loading."""
    from ensemble_dfd.training.augment import augment_layer

    backbones._preprocess_layer()
    augment_layer()


def save_model(model: Any, path: str | Path) -> Path:
    """Save a .keras file (atomically) without holding a copy of the weights in memory.

    Keras' own ``model.save("x.keras")`` builds the weights file in an in-memory buffer
    whenever the machine has room, so every checkpoint briefly doubled the model and its
    optimizer state (ResNet152V2: +0.7 GB at the end of each epoch, the run's peak). Here
    Keras writes the unzipped form to disk and the same members are zipped, streamed, into
    the same layout (metadata.json, config.json, model.weights.h5, assets/), which
    ``keras.saving.load_model`` reads as usual.
    """
    path = Path(path)
    folder = Path(tempfile.mkdtemp(prefix=f".{path.stem}.", dir=path.parent))
    try:
        model.save(folder / "unzipped", zipped=False)
        src = folder / "unzipped"
        members = [src / n for n in ("metadata.json", "config.json", "model.weights.h5")]
        members += sorted(f for f in (src / "assets").rglob("*") if f.is_file())

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w") as zf:  # stored, as Keras writes it
                for f in members:
                    zf.write(f, f.relative_to(src).as_posix())

        return atomic_write(path, write)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def load_model(path: str | Path, compile: bool = True) -> Any:
    """Load a saved model with the package's custom layers registered first."""
    import keras

    register_layers()
    return keras.models.load_model(path, compile=compile)


def _epoch_recorder(model_dir: ModelDir, phase: int, n_train: int,
                    tracker: Any = None) -> Any:
    import keras

    class EpochRecorder(keras.callbacks.Callback):
        """Append the epoch's history row, save a checkpoint and its state after every
        epoch; hand the row to the tracker (training.tracking: TensorBoard event files,
        MLflow)."""

        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.t0 = time.perf_counter()

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            seconds = time.perf_counter() - self.t0
            lr = float(np.asarray(self.model.optimizer.learning_rate))
            row = {"epoch": epoch + 1, "phase": phase, "seconds": round(seconds, 3),
                   "images_per_second": round(n_train / seconds, 2), "lr": lr}
            for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
                row[key] = float(logs[key]) if key in logs else float("nan")
            model_dir.append_history(row)
            if tracker is not None:
                tracker.epoch(row)
            save_model(self.model, model_dir.checkpoint_file)
            model_dir.write_state(phase, epoch + 1)

    return EpochRecorder()


def train_one(
    plan: ModelPlan,
    data: TrainData,
    model_dir: ModelDir,
    log: Callable[[str], None] = print,
    callbacks: list[Any] | None = None,
    tracker: Any = None,
) -> dict[str, Any]:
    """Train (or resume) one planned model into its folder; return the summary recorded
    when it finished (a finished model is skipped: its summary is returned, untouched).

    With several devices the model is built and fit data-parallel over all of them
    (accel.distribution_scope). `callbacks` are added to both phases' fits (benchmarks time
    the steps with them). A tuning result is applied to the plan first (`plan.tuned`). A
    `tracker` (training.tracking.ModelTracker) gets the plan's resolved hyperparameters and
    every epoch's history row."""
    if model_dir.finished():
        log(f"{plan.ref}: finished earlier, skipping ({model_dir.done_file})")
        return model_dir.summary()
    from ensemble_dfd.training import accel

    with accel.distribution_scope(log) as replicas:
        if replicas > 1:
            if plan.batch_size % replicas:
                raise ValueError(f"batch size {plan.batch_size} does not split over "
                                 f"{replicas} devices; use a multiple of {replicas}")
            data = even_split(data, replicas, log)
        failed = True
        try:
            summary = _train_one(plan, data, model_dir, log, callbacks, tracker)
            failed = False
            return summary
        finally:
            if tracker is not None:
                tracker.close(failed)  # MLflow: FAILED when training raised


def even_split(data: TrainData, replicas: int, log: Callable[[str], None]) -> TrainData:
    """Drop the last few images so that every batch, the last one included, splits evenly
    over the replicas (JAX's data sharding needs it); at most replicas - 1 per split."""
    keep_t, keep_v = (len(data.x_train) // replicas * replicas,
                      len(data.x_val) // replicas * replicas)
    if (keep_t, keep_v) != (len(data.x_train), len(data.x_val)):
        log(f"{len(data.x_train) - keep_t} train / {len(data.x_val) - keep_v} validation "
            f"images left out so that batches split evenly over {replicas} devices")
    return TrainData(data.x_train[:keep_t], data.y_train[:keep_t], data.x_val[:keep_v],
                     data.y_val[:keep_v])


def _start_or_resume(plan: ModelPlan, model_dir: ModelDir,
                     log: Callable[[str], None]) -> tuple[Any, Any, int, int]:
    """(model, base, epochs done, phase): from the last checkpoint, else a new model
    compiled for phase 1 (its parameter table written at once, so that a run killed later
    still has it after resuming)."""
    t = plan.train
    state = model_dir.progress()
    if state:
        done = int(state["epoch"])
        log(f"{plan.ref}: resuming after epoch {done} (phase {state['phase']})")
        model_dir.trim_history(done)
        model = load_model(model_dir.checkpoint_file)
        flat_step_functions(model)  # compiled by Keras from the file: its own step functions
        return model, backbones.find_base(model), done, int(state["phase"])
    model_dir.clear_history()
    model, base = backbones.build_model(
        plan.backbone, plan.image_size, t.weights, t.dropout, t.flip, t.rotation,
        freeze_base=t.freeze_base, base_bn_training=t.base_bn_training,
        bn_momentum=t.bn_momentum)
    compile_model(model, t.optimizer_frozen, t.lr_frozen)
    model_dir.write_params({"before_unfreeze": backbones.param_table(model, base)})
    return model, base, 0, 1


def _train_one(plan: ModelPlan, data: TrainData, model_dir: ModelDir,
               log: Callable[[str], None], callbacks: list[Any] | None,
               tracker: Any = None) -> dict[str, Any]:
    import keras

    t = plan.train
    e1, e2 = plan.epochs
    model_dir.path.mkdir(parents=True, exist_ok=True)
    keras.utils.set_random_seed(plan.seed)
    model, base, done, phase = _start_or_resume(plan, model_dir, log)
    if tracker is not None:
        from ensemble_dfd.training.tracking import plan_hparams

        tracker.start(plan_hparams(plan, keras.backend.backend(), len(data.x_train)), done)
    fit_kw, feed = fit_arguments(data.x_train, data.y_train, data.x_val, data.y_val,
                                 plan.batch_size, plan.seed, plan.data.workers)

    def fit(phase: int, first: int, last: int) -> None:
        model.fit(initial_epoch=first, epochs=last,
                  callbacks=[_epoch_recorder(model_dir, phase, len(data.x_train), tracker),
                             *feed,
                             *(callbacks or [])],
                  verbose=2, **fit_kw)

    t0 = time.perf_counter()
    if phase == 1 and done < e1:
        fit(1, done, e1)
        done = e1
    if phase == 1:
        start_phase_two(model, base, plan.fine_tune_at, t.optimizer_frozen,
                        t.optimizer_finetune, t.lr_finetune)
    after = backbones.param_table(model, base)
    if done < e1 + e2:
        fit(2, done, e1 + e2)
    save_model(model, model_dir.model_file)
    bb = plan.backbone
    model_dir.write_params({**model_dir.params(), "after_unfreeze": after, "ref": plan.ref,
                            "backbone": bb.name, "image_size": plan.image_size,
                            "fine_tune_at": plan.fine_tune_at,
                            "study": bb.study.__dict__ if bb.study else None})
    return model_dir.finish({
        "ref": plan.ref, "backbone": bb.name, "image_size": plan.image_size,
        "epochs": e1 + e2, "fine_tune_at": plan.fine_tune_at,
        "lr_finetune": t.lr_finetune, "dropout": t.dropout,
        "train_seconds_this_process": round(time.perf_counter() - t0, 1),
        "n_train": len(data.x_train), "n_val": len(data.x_val)})


def predict_logits(model: Any, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Batched inference: uint8 images -> float logits (augmentation is off at inference)."""
    return predict_batches(model, (images[i:i + batch_size]
                                   for i in range(0, len(images), batch_size)), batch_size)


def predict_batches(model: Any, batches: Iterable[np.ndarray], batch_size: int = 64,
                    keep: list[np.ndarray] | None = None) -> np.ndarray:
    """Logits of a stream of uint8 batches (e.g. decoded while the model runs); each batch is
    appended to `keep` when given, so later models can reuse the decoded images.

    One compiled step per batch (predict_on_batch), so a stream costs no more per image than
    one large array. A batch smaller than batch_size is zero-padded to a power of two, so a
    process that scores many inputs of varying size (predict, serve) traces each model for
    a handful of shapes only instead of once per distinct count.
    """
    parts = []
    for batch in batches:
        if keep is not None:
            keep.append(batch)
        n = len(batch)
        if n == 0:
            continue
        if n < batch_size:
            size = 1 << (n - 1).bit_length()
            batch = np.concatenate([batch, np.zeros((size - n, *batch.shape[1:]), batch.dtype)])
        parts.append(np.asarray(model.predict_on_batch(batch)).reshape(-1)[:n])
    if not parts:
        return np.zeros(0, dtype=np.float64)
    return np.concatenate(parts).astype(np.float64)
