"""One model's settings, resolved once from the run's config: `ModelPlan`.

Every per-model value of a run (the input size with `data.image_size_per_model`, the
`train.per_model` overrides, the backbone's own `fine_tune_at`, the seed, the batch size,
the allocator, the epochs and rates) is decided here, in `plan_models`; training, tuning,
export and the commands ask the plan instead of deriving it again from the RunConfig.
Plain data (picklable): a plan can be sent to another process or a cluster worker.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ensemble_dfd.config import ConfigError, DataConfig, RunConfig, TrainConfig, for_model
from ensemble_dfd.training import backbones


@dataclass(frozen=True)
class ModelPlan:
    """What one model is trained with. `train` is the model's own train settings (its
    `train.per_model` overrides applied, the table itself emptied); `data` is the run's data
    settings with `image_size` set to this model's size (`image_size_per_model` emptied),
    so that neither can be resolved a second, different way."""

    ref: str
    backbone: backbones.Backbone
    image_size: int
    fine_tune_at: int  # layers[:fine_tune_at] of the base stay frozen in phase 2
    seed: int
    train: TrainConfig
    data: DataConfig

    @property
    def name(self) -> str:
        """The backbone's name (e.g. MobileNetV2)."""
        return self.backbone.name

    @property
    def batch_size(self) -> int:
        return self.data.batch_size

    @property
    def epochs(self) -> tuple[int, int]:
        """(frozen, fine-tuning) epochs; the second phase continues the count."""
        return self.train.epochs_frozen, self.train.epochs_finetune

    @property
    def allocator(self) -> str:
        """The malloc setting of the process that trains this model (train.allocator)."""
        return self.train.allocator

    def tuned(self, hparams: dict[str, Any] | None) -> ModelPlan:
        """The plan with a tuning result applied (fine_tune_at, lr_finetune, dropout; keys
        the search did not cover keep the planned values)."""
        if not hparams:
            return self
        train = dataclasses.replace(
            self.train, lr_finetune=float(hparams.get("lr_finetune", self.train.lr_finetune)),
            dropout=float(hparams.get("dropout", self.train.dropout)))
        return dataclasses.replace(
            self, fine_tune_at=int(hparams.get("fine_tune_at", self.fine_tune_at)),
            train=train)


def plan_model(cfg: RunConfig, ref: str) -> ModelPlan:
    """The plan of one registered model (its input size checked against the backbone)."""
    bb = backbones.get(ref)
    size = int(cfg.data.image_size_per_model.get(ref) or cfg.data.image_size
               or bb.input_size)
    if size < bb.min_size:
        raise ConfigError(f"data.image_size: {ref} {bb.name} needs inputs of at least "
                          f"{bb.min_size} px, got {size}")
    train = dataclasses.replace(for_model(cfg.train, ref), per_model={})
    data = dataclasses.replace(cfg.data, image_size=size, image_size_per_model={})
    at = bb.fine_tune_at if train.fine_tune_at < 0 else train.fine_tune_at
    return ModelPlan(ref=ref, backbone=bb, image_size=size, fine_tune_at=at, seed=cfg.seed,
                     train=train, data=data)


def plan_models(cfg: RunConfig, refs: Sequence[str] | str | None = None) -> list[ModelPlan]:
    """The plans of `refs` (default: the config's train.models), in registry order; an
    unknown ref or a size the backbone cannot take is a ConfigError naming the key."""
    try:
        resolved = backbones.resolve_refs(cfg.train.models if refs is None else refs)
    except KeyError as exc:
        raise ConfigError(f"train.models: {exc.args[0]}") from None
    return [plan_model(cfg, ref) for ref in resolved]
