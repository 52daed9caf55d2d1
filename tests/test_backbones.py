"""Every registry entry builds with weights=None and matches the study's parameter tables."""

import pytest

from ensemble_dfd import backbones


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


def test_weights_folder_errors_name_the_folder(tmp_path):
    bb = backbones.get("M6")
    with pytest.raises(backbones.WeightsUnavailableError, match="does not exist"):
        backbones.weights_argument(bb, str(tmp_path / "absent"))
    with pytest.raises(backbones.WeightsUnavailableError, match="no .h5 file for M6"):
        backbones.weights_argument(bb, str(tmp_path))
    (tmp_path / "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_160_no_top.h5").touch()
    (tmp_path / "MobileNetV2.h5").touch()
    assert backbones.weights_argument(bb, str(tmp_path)).endswith("MobileNetV2.h5")
    assert backbones.weights_argument(bb, "none") is None


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
