"""The study's training augmentation (horizontal flip + rotation) as one fast layer.

Keras' RandomFlip + RandomRotation do the same thing, but under JAX RandomRotation goes through
`jax.scipy.ndimage.map_coordinates` over (row, column, channel) coordinates: 8 gathers per
output value, ~80 ms per batch of 40 at 64 px on a 2-core CPU (half of a MobileNetV2 step) and
most of a minute of XLA compilation inside the train step. This layer computes the same
sampling (rotation by a uniform angle in +-factor * 360 degrees about the centre, bilinear,
"reflect" fill, preceded by a horizontal flip with probability 1/2) with four row gathers of
whole pixels, written in keras.ops so that it runs unchanged under TensorFlow, JAX and torch.
"""

from __future__ import annotations

import math
from typing import Any

_CLASS: type | None = None


def _reflect(coord: Any, size: int) -> Any:
    """Half-sample symmetric reflection ("d c b a | a b c d | d c b a"), as Keras' "reflect"."""
    from keras import ops

    period = 2.0 * size
    c = ops.mod(coord + 0.5, period)
    c = ops.where(c >= size, period - c, c) - 0.5
    return ops.clip(c, 0.0, size - 1.0)


def flip_rotate(images: Any, angles: Any, flips: Any) -> Any:
    """Rotate each image (B, H, W, C, float) by `angles` (radians, B) after flipping it
    horizontally where `flips` (B, 0/1 float) is 1; bilinear, reflected at the border."""
    from keras import ops

    _, h, w, c = images.shape
    b = ops.shape(images)[0]
    ys, xs = ops.meshgrid(ops.arange(h, dtype="float32"), ops.arange(w, dtype="float32"),
                          indexing="ij")
    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos = ops.reshape(ops.cos(angles), (-1, 1, 1))
    sin = ops.reshape(ops.sin(angles), (-1, 1, 1))
    dx, dy = xs[None] - cx, ys[None] - cy
    src_x = cos * dx - sin * dy + cx
    src_y = sin * dx + cos * dy + cy
    f = ops.reshape(flips, (-1, 1, 1))
    src_x = f * ((w - 1.0) - src_x) + (1.0 - f) * src_x  # the flip, before the rotation
    src_x, src_y = _reflect(src_x, w), _reflect(src_y, h)
    x0, y0 = ops.floor(src_x), ops.floor(src_y)
    wx, wy = (src_x - x0)[..., None], (src_y - y0)[..., None]
    x0 = ops.cast(x0, "int32")
    y0 = ops.cast(y0, "int32")
    x1 = ops.minimum(x0 + 1, w - 1)
    y1 = ops.minimum(y0 + 1, h - 1)
    flat = ops.reshape(images, (-1, c))
    offset = ops.reshape(ops.arange(b, dtype="int32") * (h * w), (-1, 1, 1))

    def at(yy: Any, xx: Any) -> Any:
        idx = ops.reshape(offset + yy * w + xx, (-1,))
        return ops.reshape(ops.take(flat, idx, axis=0), (-1, h, w, c))

    top = at(y0, x0) * (1.0 - wx) + at(y0, x1) * wx
    bottom = at(y1, x0) * (1.0 - wx) + at(y1, x1) * wx
    return top * (1.0 - wy) + bottom * wy


def affine_transforms(angles: Any, flips: Any, h: int, w: int) -> Any:
    """The same sampling as `flip_rotate`, as the (B, 8) projective transforms that
    keras.ops.image.affine_transform takes (output point -> input point)."""
    from keras import ops

    cy, cx = (h - 1) / 2.0, (w - 1) / 2.0
    cos, sin = ops.cos(angles), ops.sin(angles)
    a0, a1, a2 = cos, -sin, cx - cos * cx + sin * cy
    b0, b1, b2 = sin, cos, cy - sin * cx - cos * cy
    sign = 1.0 - 2.0 * flips  # flipped: src_x -> (w - 1) - src_x
    a0, a1, a2 = sign * a0, sign * a1, flips * (w - 1.0) + sign * a2
    zero = ops.zeros_like(angles)
    return ops.stack([a0, a1, a2, b0, b1, b2, zero, zero], axis=1)


def augment_layer() -> type:
    """The registered Keras layer class (defined on first use: Keras is imported lazily)."""
    global _CLASS
    if _CLASS is not None:
        return _CLASS
    import keras
    from keras import ops

    @keras.saving.register_keras_serializable(package="ensemble_dfd")
    class FlipRotate(keras.layers.Layer):
        """Training only: random horizontal flip (p = 1/2) and rotation in +-factor turns."""

        def __init__(self, flip: bool = True, rotation: float = 0.2, seed: int | None = None,
                     **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.flip, self.rotation, self.seed = bool(flip), float(rotation), seed
            self.seed_generator = keras.random.SeedGenerator(seed)
            self.supports_masking = False

        def call(self, x: Any, training: bool | None = None) -> Any:
            x = ops.cast(x, self.compute_dtype)
            if not training or (not self.flip and self.rotation <= 0):
                return x
            n = ops.shape(x)[0]
            limit = self.rotation * 2.0 * math.pi
            angles = keras.random.uniform((n,), -limit, limit, seed=self.seed_generator)
            if self.flip:
                flips = ops.cast(keras.random.uniform((n,), seed=self.seed_generator) < 0.5,
                                 "float32")
            else:
                flips = ops.zeros((n,), "float32")
            if keras.backend.backend() == "tensorflow":  # a native kernel there
                _, h, w, _ = x.shape
                out = ops.image.affine_transform(
                    ops.cast(x, "float32"), affine_transforms(angles, flips, h, w),
                    interpolation="bilinear", fill_mode="reflect")
            else:
                out = flip_rotate(ops.cast(x, "float32"), angles, flips)
            return ops.cast(out, self.compute_dtype)

        def compute_output_shape(self, input_shape: Any) -> Any:
            return input_shape

        def get_config(self) -> dict[str, Any]:
            return {**super().get_config(), "flip": self.flip, "rotation": self.rotation,
                    "seed": self.seed}

    _CLASS = FlipRotate
    return _CLASS
