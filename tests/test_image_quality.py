"""SSIM, PSNR and L-infinity on uint8 images."""

import math

import numpy as np
import pytest

from pire_jax.evaluation import linf_grey_levels, psnr, ssim


def _photo_like(seed=0, shape=(48, 64, 3)):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=shape), axis=0), axis=1)
    smooth = (smooth - smooth.min()) / (smooth.max() - smooth.min())
    return (smooth * 255).astype(np.uint8)


def test_ssim_identical_is_one():
    image = _photo_like()
    assert ssim(image, image) == pytest.approx(1.0)


def test_ssim_matches_wang_formula_on_constant_shift():
    # For a constant image x and y = x + d, SSIM reduces to the luminance term
    # (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), with C1 = (0.01 * 255)^2.
    x = np.full((32, 32, 3), 100, dtype=np.uint8)
    y = np.full((32, 32, 3), 120, dtype=np.uint8)
    c1 = (0.01 * 255) ** 2
    expected = (2 * 100 * 120 + c1) / (100**2 + 120**2 + c1)
    assert ssim(x, y) == pytest.approx(expected, rel=1e-6)


def test_ssim_decreases_with_noise():
    image = _photo_like()
    rng = np.random.default_rng(1)
    light = np.clip(image + rng.normal(0, 3, image.shape), 0, 255).astype(np.uint8)
    heavy = np.clip(image + rng.normal(0, 30, image.shape), 0, 255).astype(np.uint8)
    assert 1.0 > ssim(image, light) > ssim(image, heavy)


def test_psnr_known_mse():
    x = np.zeros((16, 16, 3), dtype=np.uint8)
    y = np.full((16, 16, 3), 5, dtype=np.uint8)
    assert psnr(x, y) == pytest.approx(10 * math.log10(255**2 / 25))
    assert psnr(x, x) == math.inf


def test_linf_grey_levels():
    x = np.zeros((16, 16, 3), dtype=np.uint8)
    y = x.copy()
    y[3, 4, 1] = 7
    assert linf_grey_levels(x, y) == 7


def test_quality_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shapes differ"):
        ssim(np.zeros((16, 16, 3), np.uint8), np.zeros((16, 17, 3), np.uint8))
