"""Colour recovery of a modified grey image: grey accuracy, hue, black and saturated pixels."""

import numpy as np
import pytest

from pire_jax import images
from pire_jax.attacks.colour_recovery import recover_colour


def _photo(seed=0, shape=(40, 48, 3)):
    rng = np.random.default_rng(seed)
    smooth = np.cumsum(np.cumsum(rng.normal(size=shape), axis=0), axis=1)
    smooth = (smooth - smooth.min(axis=(0, 1))) / (np.ptp(smooth, axis=(0, 1)) + 1e-9)
    return (20 + smooth * 215).astype(np.uint8)


def test_recovered_grey_within_one_level():
    image = _photo()
    rng = np.random.default_rng(1)
    modified = images.rgb_to_grey(image) + rng.uniform(-20, 20, size=image.shape[:2]).astype(np.float32)
    recovered, report = recover_colour(image, modified)
    error = np.abs(images.rgb_to_grey(recovered) - np.clip(modified, 0, 255))
    assert error.max() <= 1.0
    assert error.max() <= 0.5  # the best of the 8 roundings is never worse than rounding to nearest
    assert report["max_abs_grey_error"] == pytest.approx(float(error.max()), abs=1e-4)
    assert report["mean_abs_grey_error"] < 0.1
    assert report["changed_pixels"] == image.shape[0] * image.shape[1]


def test_unchanged_pixels_keep_colour():
    image = _photo(seed=2)
    modified = images.rgb_to_grey(image).copy()
    modified[5:10, 5:10] += 12.0
    recovered, report = recover_colour(image, modified)
    untouched = np.ones(image.shape[:2], dtype=bool)
    untouched[5:10, 5:10] = False
    np.testing.assert_array_equal(recovered[untouched], image[untouched])
    assert report["changed_pixels"] == 25


def test_hue_is_kept():
    image = np.zeros((1, 1, 3), dtype=np.uint8)
    image[0, 0] = (120, 60, 30)
    grey = images.rgb_to_grey(image)
    recovered, _ = recover_colour(image, grey * 1.5)
    red, green, blue = recovered[0, 0].astype(float)
    assert red / green == pytest.approx(2.0, abs=0.05)
    assert red / blue == pytest.approx(4.0, abs=0.15)


def test_black_pixel_becomes_grey():
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    modified = np.array([[0.0, 40.0], [0.0, 0.0]], dtype=np.float32)
    recovered, report = recover_colour(image, modified)
    np.testing.assert_array_equal(recovered[0, 1], [40, 40, 40])
    np.testing.assert_array_equal(recovered[1, 1], [0, 0, 0])
    assert report["black_pixels"] == 1


def test_saturated_channel_moves_towards_white():
    image = np.zeros((1, 1, 3), dtype=np.uint8)
    image[0, 0] = (250, 40, 20)
    target = 200.0
    recovered, report = recover_colour(image, np.full((1, 1), target, dtype=np.float32))
    assert recovered[0, 0, 0] == 255
    assert abs(images.rgb_to_grey(recovered)[0, 0] - target) <= 0.5
    # Red stays the largest channel: the pixel is desaturated, not recoloured.
    assert recovered[0, 0, 0] >= recovered[0, 0, 1] >= recovered[0, 0, 2]
    assert report["clipped_pixels"] == 1


def test_targets_outside_range_are_clipped():
    image = _photo(seed=3, shape=(4, 4, 3))
    modified = np.full((4, 4), 300.0, dtype=np.float32)
    recovered, _ = recover_colour(image, modified)
    np.testing.assert_array_equal(recovered, np.full_like(image, 255))


def test_shape_mismatch_raises():
    image = _photo(shape=(8, 8, 3))
    with pytest.raises(ValueError, match="match the original"):
        recover_colour(image, np.zeros((8, 9), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        recover_colour(image.astype(np.float32), np.zeros((8, 8), dtype=np.float32))
