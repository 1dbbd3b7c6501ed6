"""Gaussian-noise baseline: the SSIM target is met, and the seed fixes the noise."""

import numpy as np
import pytest

from pire_jax.attacks.gaussian_noise import GaussianNoiseConfig, add_gaussian_noise, match_ssim
from pire_jax.evaluation import ssim


def _photo(seed=0, shape=(64, 80, 3)):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=shape), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / np.ptp(smooth)
    texture = rng.normal(scale=8.0, size=shape)
    return np.clip(30 + smooth * 190 + texture, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("target", [0.95, 0.7, 0.4])
def test_ssim_target_met(target):
    image = _photo()
    config = GaussianNoiseConfig(target_ssim=target, tolerance=0.003)
    noisy, report = match_ssim(image, config, seed=0)
    assert report["reached"]
    assert abs(ssim(image, noisy) - target) <= 0.003
    assert report["ssim"] == pytest.approx(ssim(image, noisy))
    assert report["sigma"] > 0


def test_lower_ssim_needs_more_noise():
    image = _photo(seed=1)
    _, mild = match_ssim(image, GaussianNoiseConfig(target_ssim=0.9), seed=0)
    _, strong = match_ssim(image, GaussianNoiseConfig(target_ssim=0.5), seed=0)
    assert strong["sigma"] > mild["sigma"]


def test_same_seed_same_noise():
    image = _photo(seed=2)
    config = GaussianNoiseConfig(target_ssim=0.8)
    first, _ = match_ssim(image, config, seed=5)
    second, _ = match_ssim(image, config, seed=5)
    third, _ = match_ssim(image, config, seed=6)
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, third)


def test_noise_is_rounded_and_clipped():
    image = np.full((4, 4, 3), 250, dtype=np.uint8)
    noise = np.full(image.shape, 1.0)
    noisy = add_gaussian_noise(image, 10.0, noise)
    assert noisy.dtype == np.uint8
    np.testing.assert_array_equal(noisy, 255)
    np.testing.assert_array_equal(add_gaussian_noise(image, 0.26, noise), 250)


def test_missing_target_raises():
    with pytest.raises(ValueError, match="target_ssim"):
        match_ssim(_photo(), GaussianNoiseConfig(), seed=0)
    with pytest.raises(ValueError, match="target_ssim"):
        GaussianNoiseConfig(target_ssim=1.5)
