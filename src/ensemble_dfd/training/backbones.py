"""The registry of base models M1..M10 and the study's model around each of them.

Only `build_model` and its helpers import Keras (and through it TensorFlow), so that the
registry itself can be read by the stacking and report code without a deep-learning stack.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ensemble_dfd.errors import UserError


@dataclass(frozen=True)
class StudyCounts:
    """Parameter counts the 2021 study printed (SEED_REFERENCE.md), for checking builds."""

    base_params: int
    head_params: int
    base_layers: int
    trainable_after_unfreeze: int


@dataclass(frozen=True)
class Backbone:
    ref: str  # M1..M10, or a new ref for an extra model
    name: str  # the keras.applications constructor, e.g. "Xception"
    module: str  # the keras.applications sub-module holding preprocess_input
    input_size: int  # the study's input size
    fine_tune_at: int = 100  # layers[:fine_tune_at] stay frozen in phase 2
    min_size: int = 32  # smallest input the architecture accepts (without ImageNet weights)
    study: StudyCounts | None = field(default=None, compare=False)


BACKBONES: dict[str, Backbone] = {}


def register(backbone: Backbone) -> Backbone:
    """Add a backbone under its ref; refs are unique."""
    if backbone.ref in BACKBONES:
        raise ValueError(f"backbone ref {backbone.ref} is already registered")
    BACKBONES[backbone.ref] = backbone
    return backbone


def get(ref: str) -> Backbone:
    try:
        return BACKBONES[ref]
    except KeyError:
        raise KeyError(f"unknown model ref {ref!r}; known: {', '.join(BACKBONES)}") from None


def resolve_refs(refs: str | tuple[str, ...] | list[str]) -> list[str]:
    """'M3,M7' or ['M3', 'M7'] -> validated refs in registry order."""
    if isinstance(refs, str):
        refs = [r.strip() for r in refs.split(",") if r.strip()]
    wanted = [r.upper() for r in refs]
    for ref in wanted:
        get(ref)
    return [ref for ref in BACKBONES if ref in wanted]


for _bb in (
    Backbone("M1", "Xception", "xception", 150, min_size=71,
             study=StudyCounts(20_861_480, 2_049, 132, 9_480_393)),
    Backbone("M2", "VGG19", "vgg19", 150,
             study=StudyCounts(20_024_384, 513, 22, 513)),
    Backbone("M3", "ResNet152V2", "resnet_v2", 150,
             study=StudyCounts(58_331_648, 2_049, 564, 56_396_545)),
    Backbone("M4", "InceptionV3", "inception_v3", 150, min_size=75,
             study=StudyCounts(21_802_784, 2_049, 311, 19_628_417)),
    Backbone("M5", "InceptionResNetV2", "inception_resnet_v2", 150, min_size=75,
             study=StudyCounts(54_336_736, 1_537, 780, 53_510_161)),
    Backbone("M6", "MobileNetV2", "mobilenet_v2", 160,
             study=StudyCounts(2_257_984, 1_281, 154, 1_862_721)),
    Backbone("M7", "DenseNet201", "densenet", 150,
             study=StudyCounts(18_321_984, 1_921, 707, 17_290_177)),
    Backbone("M8", "NASNetMobile", "nasnet", 224,
             study=StudyCounts(4_269_716, 1_057, 769, 4_210_713)),
    Backbone("M9", "EfficientNetB3", "efficientnet", 150,
             study=StudyCounts(10_783_535, 1_537, 384, 10_577_383)),
    Backbone("M10", "EfficientNetB7", "efficientnet", 150,
             study=StudyCounts(64_097_687, 2_561, 813, 63_663_721)),
):
    register(_bb)


class WeightsUnavailableError(UserError, RuntimeError):
    """ImageNet weights could not be downloaded or found in the offline folder."""


def keras_weights_names(backbone: Backbone, size: int = 0) -> list[str]:
    """The names Keras' own loader gives this backbone's notop ImageNet weights file at `size`
    px: the name it downloads and caches in ~/.keras/models, then the download URL's own
    name where that differs (NASNetMobile). Read from the installed keras.applications
    (constants, constructor defaults, and the name-building code mirrored where Keras builds
    the name inline); tests/test_backbones.py checks all ten against Keras' real loader.
    An unknown constructor gives []."""
    import inspect

    import keras
    from keras.src.applications import densenet, inception_v3, nasnet, vgg19, xception

    size = size or backbone.input_size
    constructor = getattr(keras.applications, backbone.name, None)
    if constructor is None:
        return []
    params = inspect.signature(constructor).parameters
    default_name = params["name"].default if "name" in params else None
    url_of = {"Xception": xception.WEIGHTS_PATH_NO_TOP, "VGG19": vgg19.WEIGHTS_PATH_NO_TOP,
              "InceptionV3": inception_v3.WEIGHTS_PATH_NO_TOP,
              "DenseNet121": densenet.DENSENET121_WEIGHT_PATH_NO_TOP,
              "DenseNet169": densenet.DENSENET169_WEIGHT_PATH_NO_TOP,
              "DenseNet201": densenet.DENSENET201_WEIGHT_PATH_NO_TOP}
    if backbone.name in url_of:
        return [url_of[backbone.name].rsplit("/", 1)[-1]]
    if backbone.name == "MobileNetV2":
        # mobilenet_v2.py: other sizes than these load the 224-px file (with a warning)
        rows = size if size in (96, 128, 160, 192, 224) else 224
        alpha = float(params["alpha"].default)
        return [f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{alpha}_{rows}_no_top.h5"]
    if backbone.name in ("NASNetMobile", "NASNetLarge"):
        url = (nasnet.NASNET_MOBILE_WEIGHT_PATH_NO_TOP if backbone.name == "NASNetMobile"
               else nasnet.NASNET_LARGE_WEIGHT_PATH_NO_TOP)
        return [f"{default_name}_no_top.h5", url.rsplit("/", 1)[-1]]
    if backbone.name.startswith("EfficientNetB"):  # efficientnet.py: name + "_notop.h5"
        return [f"{default_name}_notop.h5"]
    if default_name:  # resnet.py, resnet_v2.py, inception_resnet_v2.py
        return [f"{default_name}_weights_tf_dim_ordering_tf_kernels_notop.h5"]
    return []


def weights_file_names(backbone: Backbone, size: int = 0) -> list[str]:
    """Every name accepted in a --weights folder, in order of preference: Keras' own names,
    then <Name>.h5 and <ref>.h5."""
    return [*keras_weights_names(backbone, size), f"{backbone.name}.h5", f"{backbone.ref}.h5"]


def find_weights_file(folder: Path, names: list[str]) -> Path | None:
    """The first of `names` present in `folder` (exact name, else case-insensitively)."""
    present = {p.name: p for p in folder.iterdir() if p.is_file()}
    lower = {name.lower(): p for name, p in sorted(present.items())}
    for name in names:
        if name in present:
            return present[name]
    return next((lower[n.lower()] for n in names if n.lower() in lower), None)


def weights_argument(backbone: Backbone, weights: str, size: int = 0) -> str | None:
    """Map the config's weights setting to what keras.applications accepts.

    "imagenet" (Keras downloads and caches), "none" (random init), or a folder holding the
    notop .h5 files under Keras' own names (see keras_weights_names; they depend on `size`
    for MobileNetV2), or as <Name>.h5 / <ref>.h5.
    """
    if weights.lower() == "none":
        return None
    if weights.lower() == "imagenet":
        return "imagenet"
    folder = Path(weights)
    if not folder.is_dir():
        raise WeightsUnavailableError(
            f"weights folder {folder} does not exist; use --weights imagenet, none or a folder "
            "of Keras notop .h5 files"
        )
    names = weights_file_names(backbone, size)
    found = find_weights_file(folder, names)
    if found is None:
        raise WeightsUnavailableError(
            f"{folder}: no weights file for {backbone.ref} {backbone.name} at "
            f"{size or backbone.input_size} px; expected one of: {', '.join(names)} (the first "
            "is Keras' own name for its notop ImageNet file); copy it there or use --weights none"
        )
    return str(found)


def _preprocess_layer() -> type:
    import keras

    @keras.saving.register_keras_serializable(package="ensemble_dfd")
    class Preprocess(keras.layers.Layer):
        """Calls the backbone's own keras.applications.<module>.preprocess_input."""

        def __init__(self, module: str, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.module = module
            self.fn: Callable = getattr(keras.applications, module).preprocess_input

        def call(self, x: Any) -> Any:
            return self.fn(x)

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "module": self.module}

    return Preprocess


def build_base(backbone: Backbone, image_size: int, weights: str) -> Any:
    """The keras.applications model with include_top=False, as the study loaded it."""
    import keras

    size = image_size or backbone.input_size
    if size < backbone.min_size:
        raise ValueError(f"{backbone.ref} {backbone.name} needs inputs of at least "
                         f"{backbone.min_size} px, got {size}")
    arg = weights_argument(backbone, weights, size)
    constructor = getattr(keras.applications, backbone.name)
    try:
        return constructor(include_top=False, weights=arg, input_shape=(size, size, 3))
    except Exception as exc:  # download errors surface as many exception types
        if arg is None:
            raise
        raise WeightsUnavailableError(
            f"could not load ImageNet weights for {backbone.ref} {backbone.name}: {exc}. "
            "Without internet, put Keras' notop .h5 files in a folder and pass --weights DIR "
            "(or copy them to ~/.keras/models), or train from scratch with --weights none."
        ) from exc


def build_model(
    backbone: Backbone,
    image_size: int = 0,
    weights: str = "imagenet",
    dropout: float = 0.2,
    flip: bool = True,
    rotation: float = 0.2,
    freeze_base: bool = True,
    base_bn_training: bool = False,
    bn_momentum: float = 0.0,
) -> tuple[Any, Any]:
    """input -> flip + rotation -> preprocess_input -> base -> GAP -> dropout -> Dense(1).

    Returns (model, base). The output is a logit (> 0 means Real). With
    base_bn_training=False the base runs in inference mode (the study's training=False).
    """
    import keras

    size = image_size or backbone.input_size
    base = build_base(backbone, size, weights)
    base.trainable = not freeze_base
    if bn_momentum > 0:
        for layer in base.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = bn_momentum
    inputs = keras.Input(shape=(size, size, 3), name="image")
    x = inputs
    if flip or rotation > 0:
        from ensemble_dfd.training.augment import augment_layer

        # RandomFlip + RandomRotation's sampling in one layer that is fast under every backend
        x = augment_layer()(flip, rotation, name="augment")(x)
    x = _preprocess_layer()(backbone.module, name="preprocess")(x)
    x = base(x, training=None if base_bn_training else False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    # float32 output keeps the logit exact under mixed precision.
    outputs = keras.layers.Dense(1, dtype="float32", name="logit")(x)
    model = keras.Model(inputs, outputs, name=f"{backbone.ref}_{backbone.name}")
    return model, base


def unfreeze(base: Any, fine_tune_at: int) -> None:
    """Phase 2: base.trainable=True, then layers[:fine_tune_at] frozen again (the study)."""
    base.trainable = True
    for layer in base.layers[:fine_tune_at]:
        layer.trainable = False


def count_params(weights: list[Any]) -> int:
    import numpy as np

    return int(sum(np.prod(w.shape) for w in weights))


def param_table(model: Any, base: Any) -> dict[str, int]:
    """Trainable / non-trainable parameter counts and layers in the base, as the study listed."""
    return {
        "total": count_params(model.weights),
        "trainable": count_params(model.trainable_weights),
        "non_trainable": count_params(model.non_trainable_weights),
        "base_params": count_params(base.weights),
        "head_params": count_params(model.weights) - count_params(base.weights),
        "base_layers": len(base.layers),
    }


def find_base(model: Any) -> Any:
    """The backbone sub-model inside a built or loaded model."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError(f"model {model.name} has no backbone sub-model")
