"""Bilinear resize by a scale factor, numerically equal to PyTorch's `F.interpolate`.

cirtorch's multi-scale extraction resizes the normalised network input with
`torch.nn.functional.interpolate(x, scale_factor=s, mode="bilinear", align_corners=False)`.
`jax.image.resize` computes its source coordinates from the ratio of the sizes, not
from `1 / s`, so it differs from torch whenever `floor(size * s) / size != s`. This
module reproduces torch's CPU kernel (ATen `UpSample.h`, `upsample_bilinear2d`,
torch 2.x):

* output size = floor(size * s), computed in double precision;
* source coordinate of output pixel i = max(0, r (i + 0.5) - 0.5), where r is the
  float32 value of `1 / s` and the product and difference are rounded to float32
  once, as the fused multiply-add of torch's vectorised kernel does;
* i0 = floor(source), i1 = min(i0 + 1, size - 1), weight of i1 = source - i0;
* an axis whose output size equals its input size is copied unchanged.
"""

import math

import chex
import jax.numpy as jnp
import numpy as np


def scaled_size(size: int, scale_factor: float) -> int:
    """Return the output length torch gives an axis of `size` pixels for `scale_factor`."""
    if scale_factor <= 0:
        raise ValueError(f"Invalid scale factor {scale_factor}; expected a positive number.")
    return int(math.floor(float(size) * float(scale_factor)))


def _source_indices_and_weights(
    input_size: int, output_size: int, scale_factor: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Compute, per output pixel, the two source pixels and their weights along one axis."""
    if output_size == input_size:
        identity = np.arange(output_size)
        return identity, identity, np.ones(output_size, np.float32), np.zeros(output_size, np.float32)

    # The product of two float32 values is exact in float64, so computing in float64 and
    # rounding once to float32 reproduces torch's fused multiply-add bit for bit.
    source_step = float(np.float32(1.0 / float(scale_factor)))
    output_index = np.arange(output_size, dtype=np.float64)
    source = (source_step * (output_index + 0.5) - 0.5).astype(np.float32)
    source = np.maximum(source, np.float32(0.0))

    index0 = np.minimum(np.floor(source).astype(np.int64), input_size - 1)
    weight1 = np.clip(source - index0.astype(np.float32), np.float32(0.0), np.float32(1.0))
    index1 = np.where(index0 < input_size - 1, index0 + 1, index0)
    weight0 = np.float32(1.0) - weight1
    return index0, index1, weight0.astype(np.float32), weight1.astype(np.float32)


def _resize_axis(images: jnp.ndarray, axis: int, scale_factor: float) -> jnp.ndarray:
    input_size = images.shape[axis]
    output_size = scaled_size(input_size, scale_factor)
    if output_size < 1:
        raise ValueError(
            f"Scale factor {scale_factor} turns an axis of {input_size} pixels into {output_size}; "
            "use a larger image or a larger scale factor."
        )
    index0, index1, weight0, weight1 = _source_indices_and_weights(input_size, output_size, scale_factor)
    if output_size == input_size:
        return images

    weight_shape = [1] * images.ndim
    weight_shape[axis] = output_size
    first = jnp.take(images, jnp.asarray(index0), axis=axis)
    second = jnp.take(images, jnp.asarray(index1), axis=axis)
    return first * jnp.asarray(weight0).reshape(weight_shape) + second * jnp.asarray(weight1).reshape(weight_shape)


def resize_bilinear(images: jnp.ndarray, scale_factor: float) -> jnp.ndarray:
    """Resize NHWC images by `scale_factor` as torch's bilinear `interpolate` does (align_corners=False).

    The result is differentiable with respect to `images` and traces under `jax.jit`;
    `scale_factor` must be a Python number because it fixes the output shape.

    Args:
      images: float array (N, H, W, C) in any unit (usually network input).
      scale_factor: positive factor applied to both H and W.

    Returns:
      float array (N, floor(H * s), floor(W * s), C), same dtype as `images`.
    """
    chex.assert_rank(images, 4)
    resized = _resize_axis(images, 1, scale_factor)
    return _resize_axis(resized, 2, scale_factor)
