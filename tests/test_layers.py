"""GeM, l2n, learned whitening and the torch-exact bilinear resize."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pire_jax.layers import apply_learned_whitening, gem, l2n, resize_bilinear, scaled_size


def test_gem_matches_formula():
    rng = np.random.default_rng(0)
    feature_map = np.maximum(rng.normal(0.5, 1.0, (2, 5, 7, 4)), 0).astype(np.float32)
    p = 2.7

    expected = np.mean(np.maximum(feature_map.astype(np.float64), 1e-6) ** p, axis=(1, 2)) ** (1 / p)
    pooled = np.asarray(gem(jnp.asarray(feature_map), jnp.asarray([p], jnp.float32)))

    assert pooled.shape == (2, 4)
    np.testing.assert_allclose(pooled, expected, rtol=1e-5)


def test_gem_p1_is_average_pooling():
    rng = np.random.default_rng(1)
    feature_map = rng.uniform(0.1, 2.0, (1, 4, 3, 6)).astype(np.float32)

    pooled = np.asarray(gem(jnp.asarray(feature_map), 1.0))

    np.testing.assert_allclose(pooled, feature_map.mean(axis=(1, 2)), rtol=1e-6)


def test_gem_large_p_approaches_max():
    feature_map = np.zeros((1, 3, 3, 1), np.float32)
    feature_map[0, 1, 2, 0] = 0.8

    pooled = float(np.asarray(gem(jnp.asarray(feature_map), 40.0))[0, 0])

    # (0.8^40 / 9)^(1/40) = 0.8 * 9^(-1/40), about 0.757: close to the max 0.8, far from the mean 0.09.
    assert 0.75 < pooled <= 0.8


def test_gem_rejects_rank3_input():
    with pytest.raises(AssertionError):
        gem(jnp.ones((4, 4, 3)), 3.0)


def test_l2n_unit_rows_and_zero_row():
    vectors = jnp.asarray([[3.0, 4.0], [0.0, 0.0]], jnp.float32)

    normalised = np.asarray(l2n(vectors))

    np.testing.assert_allclose(normalised[0], [0.6, 0.8], rtol=1e-5)
    np.testing.assert_array_equal(normalised[1], [0.0, 0.0])


def test_learned_whitening_matches_numpy():
    rng = np.random.default_rng(2)
    vectors = rng.normal(size=(5, 8)).astype(np.float32)
    mean = rng.normal(size=8).astype(np.float32)
    projection = rng.normal(size=(6, 8)).astype(np.float32)

    expected = (vectors - mean) @ projection.T
    expected /= np.linalg.norm(expected, axis=1, keepdims=True) + 1e-6
    whitened = np.asarray(apply_learned_whitening(jnp.asarray(vectors), jnp.asarray(mean), jnp.asarray(projection)))

    assert whitened.shape == (5, 6)
    np.testing.assert_allclose(whitened, expected, atol=1e-5)


def test_learned_whitening_rejects_wrong_projection():
    with pytest.raises(ValueError, match="projection"):
        apply_learned_whitening(jnp.ones((2, 8)), jnp.zeros(8), jnp.ones((8, 7)))


def _torch_resize(images: np.ndarray, scale: float) -> np.ndarray:
    nchw = torch.from_numpy(images).permute(0, 3, 1, 2)
    resized = F.interpolate(nchw, scale_factor=scale, mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1).numpy()


RESIZE_CASES = [
    (height, width, scale)
    for height, width in [(7, 9), (33, 17), (97, 131), (128, 96), (2, 5)]
    for scale in [1.0, 0.5, 1 / np.sqrt(2), 0.75, 0.3, 1.05, 1.5, 3.7]
    if min(height, width) * scale >= 1  # torch rejects an empty output
]


@pytest.mark.parametrize("height, width, scale", RESIZE_CASES)
def test_resize_matches_torch(height, width, scale):
    rng = np.random.default_rng(height * 1000 + width)
    images = rng.normal(size=(2, height, width, 3)).astype(np.float32)

    expected = _torch_resize(images, scale)
    resized = np.asarray(resize_bilinear(jnp.asarray(images), scale))

    assert resized.shape == expected.shape
    np.testing.assert_allclose(resized, expected, atol=2e-6, rtol=0)


def test_resize_uses_inverse_scale_not_size_ratio():
    # floor(131 * 0.7071) = 92; 131 / 92 differs from sqrt(2), so jax.image.resize (size
    # ratio) and torch (1 / scale) sample different source positions.
    rng = np.random.default_rng(3)
    images = rng.normal(size=(1, 131, 131, 1)).astype(np.float32)
    scale = 1 / np.sqrt(2)

    expected = _torch_resize(images, scale)
    by_size_ratio = np.asarray(jax.image.resize(jnp.asarray(images), expected.shape, "linear", antialias=False))
    resized = np.asarray(resize_bilinear(jnp.asarray(images), scale))

    assert np.abs(by_size_ratio - expected).max() > 1e-3
    assert np.abs(resized - expected).max() < 2e-6


def test_resize_scale1_is_identity():
    images = jnp.arange(2 * 5 * 7 * 3, dtype=jnp.float32).reshape(2, 5, 7, 3)

    np.testing.assert_array_equal(np.asarray(resize_bilinear(images, 1.0)), np.asarray(images))


def test_resize_gradient_matches_torch():
    rng = np.random.default_rng(4)
    images = rng.normal(size=(1, 21, 17, 2)).astype(np.float32)
    weights = rng.normal(size=(1, 14, 12, 2)).astype(np.float32)  # floor(21 / sqrt 2), floor(17 / sqrt 2)
    scale = 1 / np.sqrt(2)

    gradient = jax.grad(lambda x: jnp.sum(resize_bilinear(x, scale) * weights))(jnp.asarray(images))
    torch_images = torch.from_numpy(images).permute(0, 3, 1, 2).requires_grad_(True)
    resized = F.interpolate(torch_images, scale_factor=scale, mode="bilinear", align_corners=False)
    (resized * torch.from_numpy(weights).permute(0, 3, 1, 2)).sum().backward()

    np.testing.assert_allclose(np.asarray(gradient), torch_images.grad.permute(0, 2, 3, 1).numpy(), atol=1e-5)


def test_scaled_size_floors():
    assert scaled_size(131, 1 / np.sqrt(2)) == 92
    assert scaled_size(1024, 0.5) == 512
    assert scaled_size(7, 1.5) == 10


def test_resize_rejects_empty_output():
    with pytest.raises(ValueError, match="larger"):
        resize_bilinear(jnp.ones((1, 1, 5, 3)), 0.5)
