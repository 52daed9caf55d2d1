"""keras-tuner search over fine_tune_at, the fine-tuning learning rate and dropout.

Each trial builds the study's model, unfreezes the base from `fine_tune_at`, and trains with
RMSprop on the training split, scored on validation accuracy. The best values and every
trial are saved in the model's tuning folder (ModelDir.tuning_dir) and used for the real
training run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_dfd.errors import UserError
from ensemble_dfd.runio import read_json, write_json, write_text
from ensemble_dfd.training import backbones
from ensemble_dfd.training.modeldir import ModelDir
from ensemble_dfd.training.plan import ModelPlan
from ensemble_dfd.training.train import TrainData, compile_model


def search_space(backbone: backbones.Backbone, n_layers: int) -> dict[str, list]:
    """Candidate values; fine_tune_at choices are fractions of the base's depth plus the
    study's 100 where the base is deeper than that."""
    cuts = {int(f * n_layers) for f in (0.0, 0.25, 0.5, 0.75)}
    if backbone.fine_tune_at < n_layers:
        cuts.add(backbone.fine_tune_at)
    return {"fine_tune_at": sorted(cuts), "lr_finetune": [1e-3, 1e-4, 1e-5],
            "dropout": [0.0, 0.2, 0.4]}


class TunerDependencyError(UserError, ValueError):
    """A package keras-tuner needs is missing (a ValueError, so commands report it as one
    `error:` line with exit code 2)."""


def check_tuner_dependencies(backend: str) -> None:
    """keras-tuner imports tensorboard.plugins.hparams in every trial under the TensorFlow
    backend (keras_tuner/src/engine/tuner.py, _configure_tensorboard_dir); TensorFlow 2.21
    no longer installs tensorboard. Fail before the search, not after three failed trials."""
    if backend == "tensorflow" and importlib.util.find_spec("tensorboard") is None:
        raise TunerDependencyError(
            "--tune under the TensorFlow backend needs tensorboard (keras-tuner imports "
            "tensorboard.plugins.hparams): reinstall with pip install -e '.[cpu]' (or '.[gpu]'), "
            "or pip install tensorboard")


def tune_model(plan: ModelPlan, data: TrainData, model_dir: ModelDir,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or reuse) the search for one planned model in its folder's tuning_dir; return
    the best hyperparameters (apply them with `plan.tuned`)."""
    import keras

    best_file = model_dir.best_hparams_file
    if best_file.exists():
        log(f"{plan.ref}: reusing tuning result {best_file}")
        return read_json(best_file)
    check_tuner_dependencies(keras.backend.backend())
    t = plan.train
    n_layers = len(backbones.build_base(plan.backbone, plan.image_size, "none").layers)
    space = search_space(plan.backbone, n_layers)
    tuner, fit_kw = _tuner(plan, space, model_dir.tuning_dir)
    log(f"{plan.ref}: {t.tuner} search over {space}")
    tuner.search(data.x_train, data.y_train.astype("float32"), batch_size=plan.batch_size,
                 validation_data=(data.x_val, data.y_val.astype("float32")), verbose=0,
                 **fit_kw)
    rows = [{"trial": tr.trial_id, "status": tr.status, "score": tr.score,
             **{k: tr.hyperparameters.values.get(k) for k in space}}
            for tr in tuner.oracle.trials.values()]
    write_text(model_dir.trials_file, pd.DataFrame(rows).to_csv(index=False))
    best = {k: tuner.get_best_hyperparameters(1)[0].values[k] for k in space}
    best["default_fine_tune_at"] = plan.fine_tune_at
    write_json(best_file, best)
    log(f"{plan.ref}: best {best}")
    return best


def _tuner(plan: ModelPlan, space: dict[str, list], out: Path) -> tuple[Any, dict[str, Any]]:
    """The keras-tuner search over `space` (hyperband or random, train.tuner) and the extra
    arguments of its search call."""
    import keras_tuner as kt

    t, size = plan.train, plan.image_size

    def build(hp: Any) -> Any:
        model, base = backbones.build_model(
            plan.backbone, size, t.weights, hp.Choice("dropout", space["dropout"]), t.flip,
            t.rotation, freeze_base=t.freeze_base, base_bn_training=t.base_bn_training,
            bn_momentum=t.bn_momentum)
        backbones.unfreeze(base, hp.Choice("fine_tune_at", space["fine_tune_at"]))
        compile_model(model, t.optimizer_finetune, hp.Choice("lr_finetune", space["lr_finetune"]))
        return model

    common = dict(objective="val_accuracy", seed=plan.seed, directory=str(out),
                  project_name="search", overwrite=False)
    if t.tuner == "random":  # Hyperband sets each trial's epochs itself
        return kt.RandomSearch(build, max_trials=t.tune_trials, **common), {
            "epochs": t.tune_epochs}
    return kt.Hyperband(build, max_epochs=t.tune_epochs, factor=3, **common), {}
