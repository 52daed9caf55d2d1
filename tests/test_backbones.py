"""Every registry entry builds and matches the study's parameter tables; offline weights
folders accept Keras' own file names and load them exactly."""

from contextlib import contextmanager
from pathlib import Path

import pytest

from ensemble_dfd.training import backbones


def test_registry_has_the_ten_study_models():
    assert list(backbones.BACKBONES)[:10] == [f"M{i}" for i in range(1, 11)]
    sizes = {ref: bb.input_size for ref, bb in backbones.BACKBONES.items()}
    assert sizes["M6"] == 160 and sizes["M8"] == 224 and sizes["M1"] == 150
    assert all(bb.fine_tune_at == 100 for bb in backbones.BACKBONES.values())


def test_resolve_refs_orders_and_rejects():
    assert backbones.resolve_refs("m10,M2") == ["M2", "M10"]
    with pytest.raises(KeyError, match="unknown model ref 'M11'"):
        backbones.resolve_refs("M11")


def test_register_rejects_duplicate_ref():
    with pytest.raises(ValueError, match="already registered"):
        backbones.register(backbones.Backbone("M1", "Xception", "xception", 150))


@contextmanager
def keras_loader_spy(asked: dict):
    """While active, keras.applications builds with weights="imagenet" record what Keras' own
    loader asks for (get_file's file name and the URL's name) instead of downloading, and skip
    loading: the model keeps its random initial weights."""
    import keras
    from keras.src.utils import file_utils

    def get_file(fname, origin=None, **kwargs):
        asked["names"] = [fname, origin.rsplit("/", 1)[-1]]
        return "/nonexistent/" + fname

    def load_weights(model, filepath, *args, **kwargs):
        asked["loaded"] = filepath

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(file_utils, "get_file", get_file)
        mp.setattr(keras.Model, "load_weights", load_weights)
        yield asked


def write_legacy_h5(base, path: Path, seed: int = 0) -> list:
    """Randomise the base's weights and save them in the legacy .h5 layout that Keras'
    applications loader reads (model.load_weights of a .h5 file); return the arrays."""
    import h5py
    import numpy as np
    from keras.src.legacy.saving import legacy_h5_format

    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(0.5, 1.5, w.shape).astype(w.dtype) for w in base.get_weights()]
    base.set_weights(arrays)
    with h5py.File(path, "w") as f:
        legacy_h5_format.save_weights_to_hdf5_group(f, base)
    return arrays


def test_weights_folder_errors_name_the_folder_and_the_files(tmp_path):
    bb = backbones.get("M6")
    with pytest.raises(backbones.WeightsUnavailableError, match="does not exist"):
        backbones.weights_argument(bb, str(tmp_path / "absent"), 160)
    keras_name = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5"
    with pytest.raises(backbones.WeightsUnavailableError) as err:
        backbones.weights_argument(bb, str(tmp_path), 160)
    assert str(tmp_path) in str(err.value) and "M6 MobileNetV2 at 160 px" in str(err.value)
    assert f"expected one of: {keras_name}, MobileNetV2.h5, M6.h5" in str(err.value)
    (tmp_path / keras_name).touch()  # Keras' own name alone is enough (issue 17)
    assert backbones.weights_argument(bb, str(tmp_path), 160) == str(tmp_path / keras_name)
    # at 64 px Keras loads its 224-px file, so the 160-px one is not taken
    with pytest.raises(backbones.WeightsUnavailableError, match="1.0_224_no_top.h5, Mob"):
        backbones.weights_argument(bb, str(tmp_path), 64)
    (tmp_path / "MobileNetV2.h5").touch()  # Keras' name is preferred over <Name>.h5
    assert backbones.weights_argument(bb, str(tmp_path), 160) == str(tmp_path / keras_name)
    assert backbones.weights_argument(bb, str(tmp_path), 64).endswith("MobileNetV2.h5")
    assert backbones.weights_argument(bb, "none") is None
    assert backbones.weights_argument(bb, "ImageNet") == "imagenet"


@pytest.mark.parametrize("ref", [f"M{i}" for i in range(1, 11)])
def test_each_keras_name_alone_is_recognised(ref, tmp_path):
    bb = backbones.get(ref)
    names = backbones.keras_weights_names(bb, bb.input_size)
    assert names and all(n.endswith(".h5") for n in names)
    for name in names:
        folder = tmp_path / name.replace(".", "_")
        folder.mkdir()
        (folder / "unrelated_notop.h5").touch()
        (folder / name).touch()
        assert backbones.weights_argument(bb, str(folder), bb.input_size) == str(folder / name)


@pytest.mark.slow
@pytest.mark.parametrize("ref", ["M1", "M2", "M3", "M4", "M5", "M7", "M10"])
def test_keras_loader_asks_for_a_recognised_name(ref):
    """The name Keras' own loader downloads is one keras_weights_names gives (M6, M8 and M9
    are checked, with a real file, below). Built at the smallest size Keras accepts."""
    import keras

    bb = backbones.get(ref)
    size = max(bb.min_size, 32)
    with keras_loader_spy({}) as asked:
        getattr(keras.applications, bb.name)(
            include_top=False, weights="imagenet", input_shape=(size, size, 3))
    assert asked["loaded"].endswith(asked["names"][0])
    assert set(asked["names"]) <= set(backbones.keras_weights_names(bb, size))
    keras.backend.clear_session()


@pytest.mark.slow
@pytest.mark.parametrize("ref,size", [("M6", 96), ("M8", 32), ("M9", 32)])
def test_file_under_keras_name_loads_exactly(ref, size, tmp_path):
    """A legacy-format weights file saved under the name Keras' own loader asks for is found
    in a --weights folder, and the built model's base holds exactly the file's weights."""
    import keras
    import numpy as np

    bb = backbones.get(ref)
    with keras_loader_spy({}) as asked:
        source = getattr(keras.applications, bb.name)(
            include_top=False, weights="imagenet", input_shape=(size, size, 3))
    assert set(asked["names"]) <= set(backbones.keras_weights_names(bb, size))
    # the download's own name (NASNet caches it as nasnet_mobile_no_top.h5, recognised too)
    name = asked["names"][-1]
    arrays = write_legacy_h5(source, tmp_path / name)
    (tmp_path / "other_notop.h5").touch()
    model, base = backbones.build_model(bb, size, str(tmp_path))
    got = base.get_weights()
    assert len(got) == len(arrays) > 0
    for w, want in zip(got, arrays, strict=True):
        np.testing.assert_array_equal(w, want)
    assert model.output_shape == (None, 1)


@pytest.mark.slow
@pytest.mark.parametrize("ref", [f"M{i}" for i in range(1, 11)])
def test_build_matches_study_counts(ref):
    """Keras 3.15 reproduces every count of the study's table exactly (checked per model);
    a Keras version that changes a count fails here with the model named."""
    bb = backbones.get(ref)
    model, base = backbones.build_model(bb, weights="none")
    before = backbones.param_table(model, base)
    assert before["base_params"] == bb.study.base_params, f"{ref} base params"
    assert before["head_params"] == bb.study.head_params, f"{ref} head params"
    assert before["base_layers"] == bb.study.base_layers, f"{ref} layers in base"
    assert before["trainable"] == bb.study.head_params  # phase 1: only the head learns
    backbones.unfreeze(base, bb.fine_tune_at)
    after = backbones.param_table(model, base)
    assert after["trainable"] == bb.study.trainable_after_unfreeze, f"{ref} after unfreezing"
    assert model.output_shape == (None, 1)


@pytest.mark.parametrize("ref", ["M2", "M6", "M7", "M9"])
def test_preprocess_layer_is_the_backbones_own(ref):
    """The saved model's preprocess layer gives what keras.applications.<m>.preprocess_input
    gives (VGG caffe mode, DenseNet torch mode, EfficientNet identity, MobileNet tf mode)."""
    import keras
    import numpy as np

    bb = backbones.get(ref)
    layer = backbones._preprocess_layer()(bb.module)
    x = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    want = getattr(keras.applications, bb.module).preprocess_input(x.copy())
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x)), want, rtol=1e-5, atol=1e-4)
