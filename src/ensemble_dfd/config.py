"""Experiment configuration: frozen dataclasses loaded from a TOML file plus overrides.

Every number of a run comes from here, so that `results/<run>/config.toml` (the resolved
config) is enough to repeat it.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
import warnings
from dataclasses import dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any

from ensemble_dfd.errors import UserError
from ensemble_dfd.training.memory import ALLOCATOR_SETTINGS
from ensemble_dfd.training.tracking import TRACKERS

ALIGNS = ("none", "dfb")  # prepare.align
FRAME_RULES = ("round", "floor")  # prepare.frame_rule
ALL_MODELS = ("M1", "M2", "M3", "M4", "M5", "M6", "M7", "M8", "M9", "M10")


class ConfigError(UserError, ValueError):
    """A config file or override that cannot be used."""


class ConfigDeprecated(FutureWarning):
    """A config key that still works but has a replacement (the message says which)."""


@dataclass(frozen=True)
class PrepareConfig:
    every: int = 120  # keep one frame every N frames (the study's step)
    every_seconds: float = 0.0  # >0: keep one frame every S seconds instead
    frames_per_video: int = 0  # >0: N frames spread uniformly over each video instead
    max_width: int = 640  # frames wider than this are downscaled, aspect kept
    # "blazeface" (MediaPipe's full-range BlazeFace under ONNX Runtime, weights packaged:
    # data/blazeface.py; 3.4-5x the study's faces/s at recall 0.99-1.00 of its faces:
    # benchmarks/faces_speed.py), "hog" (dlib HOG, the study's, face_recognition's default)
    # or "cnn" (dlib's MMOD CNN)
    detector: str = "blazeface"
    upsample: int = 1  # face_recognition's number_of_times_to_upsample (hog, detect_size 0)
    # hog/cnn, >0: detect on a copy of the frame whose longer side is this many px, searched
    # once (no upsampling), boxes mapped back to the frame the crop is cut from; 0 = the
    # study's search (upsample x on the frame as read). Chosen by benchmarks/faces_speed.py
    detect_size: int = 960
    # border added on EACH side of dlib's tight box, as a fraction of the box's height (top,
    # bottom) and width (left, right): the crop is (1 + 2 * margin) x the box. 0 = the
    # study's tight box; 0.15 = a 1.3x box, DeepfakeBench's scale (which it applies to a
    # landmark-aligned face: see align)
    margin: float = 0.0
    one_face_only: bool = True  # the study dropped frames with 0 or >1 faces
    # the crop: "none" = the box (with margin; the study's), "dfb" = DeepfakeBench's
    # landmark-aligned 256-px crop at 1.3x (data/align.py; margin must stay 0)
    align: str = "none"
    # frames picked over a video: "round" = linspace rounded (and k * S * fps half up),
    # "floor" = DeepfakeBench's np.linspace(0, n - 1, N, dtype=int) (truncated)
    frame_rule: str = "round"
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
    onednn: bool = True  # TensorFlow's oneDNN CPU kernels (TF_ENABLE_ONEDNN_OPTS); TF only
    # after training, each model's ONNX artifact (ensemble_dfd.artifacts) for collect,
    # predict and serve: "onnx", or "none"; skipped with a log line without the infer extra
    export: str = "onnx"
    # where the export runs: true, a fresh process of its own after the training one (its
    # peak is the export's alone: ResNet152V2 6.2 GB exporting in the trainer vs 3.4 GB
    # training); false, in the process that trained the model, right after it (one process
    # start and TensorFlow import less per model: the demo's)
    export_apart: bool = True
    # malloc of the process that trains each model (Linux, preloaded): "auto" (jemalloc
    # where installed, else the system's), "system", "jemalloc" or "tcmalloc"; jemalloc:
    # EfficientNetB7 -0.45 GB peak at the same speed (results/benchmarks/). Exports keep
    # the system's: jemalloc raised their peak
    allocator: str = "auto"
    # per-model overrides of any key above, e.g. { M2 = { lr_frozen = 1e-4 } }: from-scratch
    # profiles need them (VGG19 has no BatchNorm and diverges at rates the others need)
    per_model: dict[str, dict] = field(default_factory=dict)
    tune: bool = False
    tuner: str = "hyperband"  # "hyperband" (budget: tune_epochs) or "random" (tune_trials)
    tune_trials: int = 10
    tune_epochs: int = 3
    # experiment tracking while training: "tensorboard" (RUN/tb/<ref>/, any Keras backend;
    # training.tracking) and/or "mlflow" (a local store in RUN/mlruns; the mlflow extra,
    # training.mlflow_tracking); [] for none
    tracking: tuple[str, ...] = ("tensorboard",)


@dataclass(frozen=True)
class PipelineConfig:
    """What `python -m ensemble_dfd.pipeline` chains; paths are relative to the working dir."""

    data: str = ""  # a dataset folder in the study's layout (or its manifest.csv)
    videos: str = ""  # or videos + labels CSV, turned into a dataset by `prepare all`
    labels: str = ""
    # or a public dataset's download (`prepare all --dataset NAME --root ROOT`), official
    # splits kept: dataset = "ffpp", root = DIR, compression = "c23", methods = "a,b"
    dataset: str = ""
    root: str = ""
    compression: str = ""
    methods: str = ""
    splits: str = ""  # FF++: folder of the official train/val/test.json (default ROOT/splits)
    stack: bool = True
    report: bool = True
    # a local Dask cluster of N workers for prepare's videos and base_train's models when
    # neither --dask-workers nor --scheduler is given (0: none; without the dask extra the
    # steps run here, with a log line)
    dask_workers: int = 0


# the old [pipeline] keys that [evaluate] replaced; still read (see _migrate_pipeline)
DEPRECATED_PIPELINE_KEYS = ("extra_videos", "extra_data", "extra_every")


@dataclass(frozen=True)
class EvalSet:
    """One `[evaluate]` entry: images scored as their own split of the run's logit store.

    Either ``data`` (a dataset folder or its manifest.csv; ``split``: only that split of it,
    default all its images) or ``videos`` (a folder of videos, labels in ``labels``, default
    ``<videos>/labels.csv``, turned into faces by `prepare all`; ``every`` or
    ``frames_per_video`` pick the frames, default the [prepare] table's), or ``dataset`` +
    ``root`` (a public dataset's download read by its reader, `prepare all --dataset`;
    ``split``: only that official split, e.g. Celeb-DF's test list; ``compression``,
    ``methods``, ``part_splits`` as the prepare flags). ``optional = true``: a set whose
    root is absent or matches no layout is skipped with a line saying so (a partial
    download), instead of stopping the run. Paths are relative to the working directory,
    as in [pipeline].
    """

    data: str = ""
    split: str = ""
    videos: str = ""
    labels: str = ""
    every: int = 0
    frames_per_video: int = 0
    dataset: str = ""
    root: str = ""
    compression: str = ""
    methods: str = ""
    part_splits: str = ""
    optional: bool = False


@dataclass(frozen=True)
class StackConfig:
    """The comparison of `python -m ensemble_dfd.stack` (its flags override these)."""

    video_aggregate: str = "mean_logit"  # frame logits -> video: mean_logit, mean_prob, confident
    min_effect: float = 0.03  # a split is large enough to judge a claim if its mdd_acc <= this
    # the meta-learners to fit (default: every registered one; --learners overrides); a tiny
    # validation split (few video groups) cannot support those tuned by inner grouped CV
    learners: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunConfig:
    name: str = "run"
    seed: int = 1234
    description: str = ""
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    evaluate: dict[str, EvalSet] = field(default_factory=dict)  # split name -> set
    stack: StackConfig = field(default_factory=StackConfig)


def _coerce(cls: type, name: str, value: Any, key: str = "") -> Any:
    """Convert TOML values to the field's declared type (lists to tuples, ints to floats);
    a value that cannot be converted is a ConfigError naming ``key`` (the dotted key)."""
    key = key or f"{cls.__name__}.{name}"
    ftype = {f.name: f.type for f in fields(cls)}[name]
    ftype = str(ftype)
    try:
        if ftype.startswith("tuple"):
            if isinstance(value, str):
                value = [v.strip() for v in value.split(",") if v.strip()]
            if not isinstance(value, list | tuple):
                raise ConfigError(f"'{key}': expected a list, got {value!r}")
            return tuple(float(v) if "float" in ftype else v for v in value)
        if ftype == "float":
            if isinstance(value, bool):
                raise ValueError
            return float(value)
        if ftype == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ConfigError(f"'{key}': expected an integer, got {value!r}")
            return int(value)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"'{key}': expected {'a number' if ftype != 'int' else 'an integer'}"
                          f", got {value!r}") from None
    if ftype == "bool":
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0", "yes", "no"):
                raise ConfigError(f"'{key}': expected true/false, got {value!r}")
            return value.lower() in ("true", "1", "yes")
        return bool(value)
    if ftype.startswith("dict"):
        if not isinstance(value, dict):
            raise ConfigError(f"'{key}': expected a table, got {value!r}")
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
        if str(sub) == "dict[str, EvalSet]":
            kwargs[key] = _build_evaluate(value, f"{where}{key}")
        elif sub_cls is not None:
            if not isinstance(value, dict):
                raise ConfigError(f"'{where}{key}' must be a table")
            kwargs[key] = _build(sub_cls, value, f"{where}{key}.")
        else:
            kwargs[key] = _coerce(cls, key, value, f"{where}{key}")
    return cls(**kwargs)


def _build_evaluate(table: Any, where: str) -> dict[str, EvalSet]:
    """`[evaluate]`: split name -> { data = DIR[, split = S] } | { videos = DIR, ... }; a bare
    string is a dataset (`dfdmini = "../shared/data/dfd-mini"`)."""
    if not isinstance(table, dict):
        raise ConfigError(f"'{where}' must be a table of split = {{ data = DIR }} or "
                          f"{{ videos = DIR }}, got {table!r}")
    out: dict[str, EvalSet] = {}
    for name, spec in table.items():
        if isinstance(spec, EvalSet):
            out[name] = spec
            continue
        if isinstance(spec, str):
            spec = {"data": spec}
        if not isinstance(spec, dict):
            raise ConfigError(f"'{where}.{name}' must be a dataset path or a table "
                              f"{{ data = DIR }} / {{ videos = DIR }}, got {spec!r}")
        out[name] = _build(EvalSet, spec, f"{where}.{name}.")
    return out


def _migrate_pipeline(table: dict[str, Any], where: str) -> dict[str, Any]:
    """Read the deprecated `[pipeline] extra_videos / extra_data / extra_every` as `[evaluate]`
    entries, warning with what to write instead (empty ones are dropped silently)."""
    pipe = table.get("pipeline")
    if not isinstance(pipe, dict) or not any(k in pipe for k in DEPRECATED_PIPELINE_KEYS):
        return table
    pipe = dict(pipe)
    old = {k: pipe.pop(k) for k in DEPRECATED_PIPELINE_KEYS if k in pipe}
    for key in ("extra_videos", "extra_data"):
        if not isinstance(old.get(key, {}), dict):
            raise ConfigError(f"{where}: 'pipeline.{key}' must be a table split = DIR")
    every = old.get("extra_every", 0)
    if isinstance(every, bool) or not isinstance(every, int) or every < 0:
        raise ConfigError(f"{where}: 'pipeline.extra_every' must be an integer >= 0")
    new: dict[str, dict[str, Any]] = {n: {"data": d} for n, d in old.get("extra_data", {}).items()}
    for name, folder in old.get("extra_videos", {}).items():
        new[name] = {"videos": folder, **({"every": every} if every else {})}
    evaluate = table.get("evaluate", {})
    clash = sorted(set(new) & set(evaluate if isinstance(evaluate, dict) else {}))
    if clash:
        raise ConfigError(f"{where}: split(s) {', '.join(clash)} named both in [evaluate] and "
                          "in the deprecated [pipeline] extra_* keys; keep the [evaluate] one")
    if new:
        warnings.warn(
            f"{where}: [pipeline] {', '.join(old)} are deprecated and read as [evaluate] "
            + "; ".join(f"{n} = {_toml_value(v)}" for n, v in new.items())
            + ": write that [evaluate] table instead", ConfigDeprecated, stacklevel=3)
    return {**table, "pipeline": pipe, "evaluate": {**evaluate, **new}}


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
    where = str(path) if path is not None else "config"
    table = _migrate_pipeline(_merge(table, overrides or {}), where)
    try:
        cfg = _build(RunConfig, table, "")
        validate(cfg)
    except ConfigError as exc:  # name the file; the key is in the message
        if path is None:
            raise
        also = " (with command-line overrides)" if overrides else ""
        raise ConfigError(f"{path}{also}: {exc}") from None
    return cfg


def load_recorded(path: str | Path) -> RunConfig:
    """A run folder's own config.toml: as load_config, but a run recorded before a key was
    renamed is read without a deprecation warning (the user did not write that file)."""
    overrides: dict[str, Any] = {}
    try:
        recorded = tomllib.loads(Path(path).read_text())
    except (OSError, tomllib.TOMLDecodeError):
        recorded = None  # load_config names the problem
    if isinstance(recorded, dict) and "detect_size" not in recorded.get("prepare", {}):
        # recorded before the key existed: that run searched the study's way
        overrides = {"prepare": {"detect_size": 0}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConfigDeprecated)
        return load_config(path, overrides)


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
    if cfg.prepare.detector not in ("hog", "cnn", "blazeface"):
        raise ConfigError("prepare.detector must be 'hog', 'cnn' or 'blazeface', got "
                          f"{cfg.prepare.detector!r}")
    if cfg.data.batch_size < 1:
        raise ConfigError("data.batch_size must be >= 1")
    if cfg.train.mixed_precision not in ("auto", "on", "off", "bf16"):
        raise ConfigError("train.mixed_precision must be auto, on, off or bf16")
    for name in ("optimizer_frozen", "optimizer_finetune"):
        if getattr(cfg.train, name) not in ("adam", "rmsprop", "sgd"):
            raise ConfigError(f"train.{name} must be adam, rmsprop or sgd")
    if cfg.train.export not in ("onnx", "none"):
        raise ConfigError("train.export must be onnx or none")
    if cfg.pipeline.dask_workers < 0:
        raise ConfigError("pipeline.dask_workers must be >= 0")
    if cfg.train.allocator not in ALLOCATOR_SETTINGS:
        raise ConfigError(f"train.allocator must be {', '.join(ALLOCATOR_SETTINGS)}")
    unknown = [t for t in cfg.train.tracking if t not in TRACKERS]
    if unknown:
        raise ConfigError(f"train.tracking: unknown tracker(s) {', '.join(unknown)} (have: "
                          f"{', '.join(TRACKERS)})")
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
    _validate_prepare(cfg.prepare)
    p = cfg.pipeline
    _validate_dataset("pipeline.dataset", p.dataset, p.root)
    if sum(map(bool, (p.data, p.videos, p.dataset))) > 1:
        raise ConfigError("[pipeline]: give one of data = DIR, videos = DIR or dataset = NAME "
                          "(with root = DIR)")
    reserved = {cfg.data.train_split, cfg.data.validation_split, *cfg.data.eval_splits,
                "validation_oof"}
    for name, es in cfg.evaluate.items():
        _validate_eval_set(name, es, reserved)


# the dataset readers a config may name (ensemble_dfd.datasets.READERS but `dfb`, which
# needs its index JSON: `prepare import-dfb`); kept here so config imports no reader
DATASET_NAMES = ("ffpp", "dfd", "celebdf", "dfdc", "dfdcp", "wilddeepfake")


def _validate_dataset(key: str, name: str, root: str) -> None:
    if name and name not in DATASET_NAMES:
        raise ConfigError(f"{key}: {name!r} is no dataset reader (known: "
                          f"{', '.join(DATASET_NAMES)})")
    if name and not root:
        raise ConfigError(f"{key}: dataset = {name!r} needs root = DIR (its download)")


def _validate_prepare(p: PrepareConfig) -> None:
    if p.frames_per_video < 0 or p.margin < 0:
        raise ConfigError("prepare.frames_per_video and prepare.margin must be >= 0")
    if p.detect_size < 0 or 0 < p.detect_size < 80:
        raise ConfigError(f"prepare.detect_size must be 0 (the study's search) or >= 80 px "
                          f"(dlib's smallest face window), got {p.detect_size}")
    if p.frames_per_video and p.every_seconds > 0:
        raise ConfigError("prepare.frames_per_video and prepare.every_seconds are two ways to "
                          "pick frames: set one of them (0 turns one off)")
    if p.align not in ALIGNS:
        raise ConfigError(f"prepare.align must be one of {', '.join(ALIGNS)}, got {p.align!r}")
    if p.frame_rule not in FRAME_RULES:
        raise ConfigError(f"prepare.frame_rule must be one of {', '.join(FRAME_RULES)}, got "
                          f"{p.frame_rule!r}")
    if p.align != "none" and p.margin:
        raise ConfigError(f"prepare.margin applies to the box crop; with prepare.align = "
                          f"{p.align!r} the crop's scale is the recipe's (1.3x): set margin 0")


SPLIT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def _validate_eval_set(name: str, es: EvalSet, reserved: set[str]) -> None:
    key = f"evaluate.{name}"
    if not SPLIT_NAME.fullmatch(name):
        raise ConfigError(f"{key}: a split name is letters, digits, '_', '-' or '.' (it "
                          "names files), starting with a letter or digit")
    if name in reserved:
        raise ConfigError(f"{key}: '{name}' is one of the run's own splits "
                          f"({', '.join(sorted(reserved))}); name the set otherwise")
    if bool(es.data) + bool(es.videos) + bool(es.dataset) != 1:
        raise ConfigError(f"{key}: give exactly one of data = DIR (a dataset folder or "
                          "manifest), videos = DIR (a folder of videos with labels.csv) or "
                          "dataset = NAME with root = DIR (a public dataset's download)")
    _validate_dataset(f"{key}.dataset", es.dataset, es.root)
    if (es.root or es.compression or es.methods or es.part_splits) and not es.dataset:
        raise ConfigError(f"{key}: root, compression, methods and part_splits go with "
                          "dataset = NAME")
    if es.data and (es.labels or es.every or es.frames_per_video):
        raise ConfigError(f"{key}: labels, every and frames_per_video are for videos = DIR, "
                          "not data = DIR")
    if es.videos and es.split:
        raise ConfigError(f"{key}: split is for data = DIR (which split of the dataset); a "
                          "video set becomes one split whole")
    if es.every < 0 or es.frames_per_video < 0:
        raise ConfigError(f"{key}: every and frames_per_video must be >= 0")
    if es.every and es.frames_per_video:
        raise ConfigError(f"{key}: every and frames_per_video are two ways to pick frames: "
                          "set one of them")


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
    data["evaluate"] = {name: {k: v for k, v in spec.items() if v not in ("", 0)}
                        for name, spec in data.get("evaluate", {}).items()}  # set keys only
    lines = [f"{k} = {_toml_value(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += ["", f"[{key}]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in value.items()]
    return "\n".join(lines) + "\n"
