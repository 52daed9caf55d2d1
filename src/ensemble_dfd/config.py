"""Experiment configuration: frozen dataclasses loaded from a TOML file plus overrides.

Every number of a run comes from here, so that `results/<run>/config.toml` (the resolved
config) is enough to repeat it.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ensemble_dfd.errors import UserError

ALL_MODELS = ("M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8", "M9", "M10")


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used."""


@dataclass(frozen=True)
class PrepareConfig:
    every: int = 120  # keep one frame every N frames (the study's step)
    every_seconds: float = 0.0  # >0: keep one frame every S seconds instead
    max_width: int = 640  # frames wider than this are downscaled, aspect kept
    detector: str = "hog"  # "hog" (dlib HOG, face_recognition's default) or "cnn"
    upsample: int = 1  # face_recognition's number_of_times_to_upsample
    margin: float = 0.0  # extra border around the tight box, as a fraction of its size
    one_face_only: bool = True  # the study dropped frames with 0 or >1 faces
    ratios: tuple[float, float, float] = (0.80, 0.19, 0.01)  # train, validation, test
    balance: bool = False  # subsample the larger class within each split
    jpeg_quality: int = 95


@dataclass(frozen=True)
class DataConfig:
    image_size: int = 0  # 0: each backbone's own input size (150/160/224 as in the study)
    image_size_per_model: dict[str, int] = field(default_factory=dict)
    batch_size: int = 40
    limit: int = 0  # >0: at most N images per split and class
    limit_per_split: dict[str, int] = field(default_factory=dict)  # e.g. {validation = 150}
    train_split: str = "train"
    validation_split: str = "validation"
    eval_splits: tuple[str, ...] = ("validation", "test")
    workers: int = 0  # image decoding threads; 0 = all cores
    in_memory: bool = False  # decode whole splits into RAM once instead of streaming batches


@dataclass(frozen=True)
class TrainConfig:
    models: tuple[str, ...] = ALL_MODELS
    weights: str = "imagenet"  # "imagenet", "none", or a folder of <keras app name>.h5 files
    freeze_base: bool = True  # phase 1 trains only the head (the study); False: all layers
    base_bn_training: bool = False  # False: base(training=False) as the study did
    bn_momentum: float = 0.0  # >0 overrides BatchNormalization momentum in the base
    epochs_frozen: int = 10
    epochs_finetune: int = 10
    optimizer_frozen: str = "adam"
    lr_frozen: float = 1e-4
    optimizer_finetune: str = "rmsprop"
    lr_finetune: float = 1e-5
    fine_tune_at: int = -1  # -1: each backbone's own (100 for all ten, as the study)
    dropout: float = 0.2
    flip: bool = True
    rotation: float = 0.2
    mixed_precision: str = "auto"  # "auto" (on when a GPU is visible), "on", "off", "bf16"
    process_per_model: bool = True  # train each model in a fresh process (bounded memory)
    # per-model overrides of any key above, e.g. { M2 = { lr_frozen = 1e-4 } }: from-scratch
    # profiles need them (VGG19 has no BatchNorm and diverges at rates the others need)
    per_model: dict[str, dict] = field(default_factory=dict)
    tune: bool = False
    tuner: str = "hyperband"  # "hyperband" (budget: tune_epochs) or "random" (tune_trials)
    tune_trials: int = 10
    tune_epochs: int = 3


@dataclass(frozen=True)
class PipelineConfig:
    """What `python -m ensemble_dfd.pipeline` chains; paths are relative to the working dir."""

    data: str = ""  # a dataset folder in the study's layout (or its manifest.csv)
    videos: str = ""  # or videos + labels CSV, turned into a dataset by `prepare all`
    labels: str = ""
    extra_videos: dict[str, str] = field(default_factory=dict)  # split -> folder with labels.csv
    extra_data: dict[str, str] = field(default_factory=dict)  # split -> dataset folder
    extra_every: int = 0  # frame step for extra videos (0: prepare.every)
    stack: bool = True
    report: bool = True


@dataclass(frozen=True)
class StackConfig:
    """The comparison of `python -m ensemble_dfd.stack` (its flags override these)."""

    video_aggregate: str = "mean_logit"  # frame logits -> video: mean_logit, mean_prob, confident
    min_effect: float = 0.03  # a split is large enough to judge a claim if its mdd_acc <= this


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    seed: int = 1234
    description: str = ""
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    stack: StackConfig = field(default_factory=StackConfig)


def _coerce(cls: type, name: str, value: Any) -> Any:
    """Convert TOML values to the field's declared type (lists to tuples, ints to floats)."""
    ftype = {f.name: f.type for f in fields(cls)}[name]
    ftype = str(ftype)
    if ftype.startswith("tuple"):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{cls.__name__}.{name}: expected a list, got {value!r}")
        return tuple(float(v) if "float" in ftype else v for v in value)
    if ftype == "float":
        return float(value)
    if ftype == "int":
        if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{cls.__name__}.{name}: expected an integer, got {value!r}")
        return int(value)
    if ftype == "bool":
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"{cls.__name__}.{name}: expected true/false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if ftype.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"{cls.__name__}.{name}: expected a table, got {value!r}")
        return dict(value)
    return value if not isinstance(value, int | float) or ftype != "str" else str(value)


def _build(cls: type, table: dict[str, Any], where: str) -> Any:
    known = {f.name: f for f in fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, value in table.items():
        if key not in known:
            raise ConfigError(f"unknown key '{where}{key}' (known: {', '.join(known)})")
        sub = known[key].type
        sub_cls = {"PrepareConfig": PrepareConfig, "DataConfig": DataConfig,
                   "TrainConfig": TrainConfig, "PipelineConfig": PipelineConfig,
                   "StackConfig": StackConfig}.get(str(sub))
        if sub_cls is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"'{where}{key}' must be a table")
            kwargs[key] = _build(sub_cls, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(cls, key, value)
    return cls(**kwargs)


def for_model(train: TrainConfig, ref: str) -> TrainConfig:
    """The training settings of one model: the run's, with its per_model overrides applied."""
    over = train.per_model.get(ref, {})
    if not over:
        return train
    base = {f.name: getattr(train, f.name) for f in fields(train) if f.name != "per_model"}
    return dataclasses.replace(_build(TrainConfig, {**base, **over}, f"train.per_model.{ref}."),
                               per_model=train.per_model)


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Tables merge key by key; an empty table (`--set train.per_model={}`) clears one."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and value and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """Turn ['train.epochs_frozen=2', 'data.limit=50'] into a nested dict (values as TOML)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"override {pair!r} is not KEY=VALUE")
        key, raw = pair.split("=", 1)
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # bare strings such as weights=none
        node = out
        parts = key.strip().split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return out


def load_config(path: str | Path | None = None,
                overrides: dict[str, Any] | None = None) -> RunConfig:
    """Defaults < TOML file < overrides (a nested dict, e.g. from CLI flags)."""
    table: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            table = tomllib.loads(path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    table = _merge(table, overrides or {})
    cfg = _build(RunConfig, table, "")
    validate(cfg)
    return cfg


def flags_win(cfg: RunConfig, keys: list[str]) -> RunConfig:
    """A value the user typed as a dedicated flag (`--epochs-frozen 2`) holds for every
    model: drop that key from the per-model tables (`train.per_model`,
    `data.image_size_per_model`) so the file's per-model values cannot undo it."""
    train_keys = {k.split(".", 1)[1] for k in keys if k.startswith("train.")}
    per_model = {ref: {k: v for k, v in over.items() if k not in train_keys}
                 for ref, over in cfg.train.per_model.items()}
    per_model = {ref: over for ref, over in per_model.items() if over}
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, per_model=per_model))
    if "data.image_size" in keys:
        cfg = dataclasses.replace(
            cfg, data=dataclasses.replace(cfg.data, image_size_per_model={}))
    return cfg


def validate(cfg: RunConfig) -> None:
    """Reject values that would fail later, with the key named."""
    r = cfg.prepare.ratios
    if len(r) != 3 or any(x < 0 for x in r) or abs(sum(r) - 1.0) > 1e-6:
        raise ConfigError(
            f"prepare.ratios must be three non-negative numbers summing to 1, got {r}")
    if cfg.prepare.detector not in ("hog", "cnn"):
        raise ConfigError(f"prepare.detector must be 'hog' or 'cnn', got {cfg.prepare.detector!r}")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size must be >= 1")
    if cfg.train.mixed_precision not in ("auto", "on", "off", "bf16"):
        raise ConfigError("train.mixed_precision must be auto, on, off or bf16")
    for name in ("optimizer_frozen", "optimizer_finetune"):
        if getattr(cfg.train, name) not in ("adam", "rmsprop", "sgd"):
            raise ConfigError(f"train.{name} must be adam, rmsprop or sgd")
    if cfg.train.tuner not in ("hyperband", "random"):
        raise ConfigError("train.tuner must be hyperband or random")
    for ref, over in cfg.train.per_model.items():
        if not isinstance(over, dict) or "per_model" in over or "models" in over:
            raise ConfigError(f"train.per_model.{ref} must be a table of train keys")
        one = dataclasses.replace(for_model(cfg.train, ref), per_model={})
        validate(dataclasses.replace(cfg, train=one))
    if cfg.train.epochs_frozen < 0 or cfg.train.epochs_finetune < 0:
        raise ConfigError("train.epochs_* must be >= 0")
    if cfg.stack.video_aggregate not in ("mean_logit", "mean_prob", "confident"):
        raise ConfigError("stack.video_aggregate must be mean_logit, mean_prob or confident, "
                          f"got {cfg.stack.video_aggregate!r}")
    if not 0.0 < cfg.stack.min_effect < 1.0:
        raise ConfigError(f"stack.min_effect must be in (0, 1), got {cfg.stack.min_effect}")


def to_dict(cfg: Any) -> dict[str, Any]:
    return dataclasses.asdict(cfg) if is_dataclass(cfg) else dict(cfg)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def dumps(cfg: RunConfig) -> str:
    """The resolved config as TOML (readable back by load_config)."""
    data = to_dict(cfg)
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"
