"""keras-tuner search over fine_tune_at, the fine-tuning learning rate and dropout.

Each trial builds the study's model, unfreezes the base from `fine_tune_at`, and trains with
RMSprop on the training split, scored on validation accuracy. The best values are saved next
to the model (tuning/best_hparams.json, trials.csv) and used for the real training run.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from ensemble_dfd import backbones
from ensemble_dfd.config import RunConfig, for_model
from ensemble_dfd.errors import UserError
from ensemble_dfd.runio import read_json, write_json, write_text
from ensemble_dfd.train import TrainData, compile_model, fine_tune_at, image_size_for


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


def tune_model(backbone: backbones.Backbone, cfg: RunConfig, data: TrainData, out: Path,
               log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run (or reuse) the search for one backbone; return the best hyperparameters."""
    import keras
    import keras_tuner as kt

    best_file = out / "best_hparams.json"
    if best_file.exists():
        log(f"{backbone.ref}: reusing tuning result {best_file}")
        return read_json(best_file)
    check_tuner_dependencies(keras.backend.backend())
    t = for_model(cfg.train, backbone.ref)
    size = image_size_for(backbone, cfg)
    n_layers = len(backbones.build_base(backbone, size, "none").layers)
    space = search_space(backbone, n_layers)

    def build(hp: Any) -> Any:
        model, base = backbones.build_model(
            backbone, size, t.weights, hp.Choice("dropout", space["dropout"]), t.flip,
            t.rotation, freeze_base=t.freeze_base, base_bn_training=t.base_bn_training,
            bn_momentum=t.bn_momentum)
        backbones.unfreeze(base, hp.Choice("fine_tune_at", space["fine_tune_at"]))
        compile_model(model, t.optimizer_finetune, hp.Choice("lr_finetune", space["lr_finetune"]))
        return model

    common = dict(objective="val_accuracy", seed=cfg.seed, directory=str(out),
                  project_name="search", overwrite=False)
    fit_kw: dict[str, Any] = {}
    if t.tuner == "random":
        tuner = kt.RandomSearch(build, max_trials=t.tune_trials, **common)
        fit_kw["epochs"] = t.tune_epochs  # Hyperband sets each trial's epochs itself
    else:
        tuner = kt.Hyperband(build, max_epochs=t.tune_epochs, factor=3, **common)
    log(f"{backbone.ref}: {t.tuner} search over {space}")
    tuner.search(data.x_train, data.y_train.astype("float32"), batch_size=cfg.data.batch_size,
                 validation_data=(data.x_val, data.y_val.astype("float32")), verbose=0,
                 **fit_kw)
    rows = [{"trial": tr.trial_id, "status": tr.status, "score": tr.score,
             **{k: tr.hyperparameters.values.get(k) for k in space}}
            for tr in tuner.oracle.trials.values()]
    write_text(out / "trials.csv", pd.DataFrame(rows).to_csv(index=False))
    best = {k: tuner.get_best_hyperparameters(1)[0].values[k] for k in space}
    best["default_fine_tune_at"] = fine_tune_at(backbone, cfg)
    write_json(best_file, best)
    log(f"{backbone.ref}: best {best}")
    return best
