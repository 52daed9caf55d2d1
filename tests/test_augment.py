"""The study's flip + rotation layer: same sampling as scipy's rotate, under every backend."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage


def test_flip_rotate_matches_scipy_rotate_with_reflect_fill():
    from keras import ops

    from ensemble_dfd.training.augment import affine_transforms, flip_rotate

    img = np.random.RandomState(0).rand(3, 17, 23, 3).astype("float32")
    angles = np.array([0.5, -1.1, 1.25], "float32")  # radians, inside +-0.2 turns
    flips = np.array([0.0, 1.0, 1.0], "float32")
    out = np.asarray(flip_rotate(ops.convert_to_tensor(img), ops.convert_to_tensor(angles),
                                 ops.convert_to_tensor(flips)))
    for i in range(3):
        src = img[i][:, ::-1] if flips[i] else img[i]
        ref = ndimage.rotate(src, np.degrees(angles[i]), reshape=False, order=1, mode="reflect")
        np.testing.assert_allclose(out[i], ref, atol=1e-5)
    # the native-kernel path (used under TensorFlow) samples the same points
    native = ops.image.affine_transform(img, affine_transforms(
        ops.convert_to_tensor(angles), ops.convert_to_tensor(flips), 17, 23),
        interpolation="bilinear", fill_mode="reflect")
    np.testing.assert_allclose(np.asarray(native), out, atol=1e-5)


def test_layer_is_random_in_training_identity_in_inference_and_saves(tmp_path):
    import keras

    from ensemble_dfd.training.augment import augment_layer
    from ensemble_dfd.training.train import load_model

    x = np.random.RandomState(1).randint(0, 256, (8, 16, 16, 3)).astype("uint8")
    inputs = keras.Input((16, 16, 3))
    model = keras.Model(inputs, augment_layer()(True, 0.2, seed=3, name="augment")(inputs))
    np.testing.assert_array_equal(np.asarray(model(x, training=False)), x.astype("float32"))
    a = np.asarray(model(x, training=True))
    b = np.asarray(model(x, training=True))
    assert a.shape == x.shape and not np.allclose(a, b)  # a new draw every step
    assert a.min() >= 0 and a.max() <= 255  # bilinear + reflect: no black corners, no overshoot
    path = tmp_path / "m.keras"
    model.save(path)
    again = load_model(path)
    layer = again.get_layer("augment")
    assert (layer.flip, layer.rotation) == (True, pytest.approx(0.2))
