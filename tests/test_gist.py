"""Tests of the GIST descriptor (LMgist and lear colour variant) and the gist retrieval system."""

import numpy as np
import pytest

from pire_jax.global_features import gist
from pire_jax.retrieval import make_system


def grating(direction: str, period: float = 16.0, height: int = 300, width: int = 400) -> np.ndarray:
    """Return a grey sine grating as uint8 RGB; "x" varies along columns (vertical stripes)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    phase = {"x": x, "y": y, "x+y": (x + y) / np.sqrt(2), "x-y": (x - y) / np.sqrt(2)}[direction]
    values = 127.5 + 100.0 * np.sin(2 * np.pi * phase / period)
    return np.repeat(values[..., None], 3, axis=2).astype(np.uint8)


def orientation_energy(descriptor: np.ndarray, config: gist.GistConfig) -> tuple[int, np.ndarray]:
    """Return the scale with the most energy and the energy of its orientations (summed over blocks)."""
    energies = descriptor.reshape(-1, config.n_blocks**2).sum(axis=1)
    per_scale = np.split(energies, np.cumsum(config.orientations)[:-1])
    strongest = int(np.argmax([scale.sum() for scale in per_scale]))
    return strongest, per_scale[strongest]


def test_output_sizes():
    image = np.random.default_rng(0).integers(0, 256, (120, 200, 3), dtype=np.uint8)
    grey = gist.gist_descriptor(image)
    colour = gist.gist_descriptor(image, gist.GistConfig(colour=True))
    assert grey.shape == (512,)
    assert colour.shape == (960,)
    assert grey.dtype == np.float32
    assert np.isfinite(grey).all()
    assert np.isfinite(colour).all()
    assert gist.GistConfig().dimension == 512
    assert gist.GistConfig(colour=True).dimension == 960


def test_constant_image_is_zero():
    descriptor = gist.gist_descriptor(np.full((100, 150, 3), 77, np.uint8))
    np.testing.assert_array_equal(descriptor, 0.0)


@pytest.mark.parametrize("direction, orientation", [("x", 0), ("y", 4), ("x-y", 2), ("x+y", 6)])
def test_grating_peaks_in_orientation(direction, orientation):
    config = gist.GistConfig()
    scale, energies = orientation_energy(gist.gist_descriptor(grating(direction), config), config)
    # A 16-pixel period in a 256-pixel image (after resizing the 300-pixel side) is 0.07
    # cycles per pixel, the centre of the third scale (0.3 / 1.85^2 = 0.088).
    assert scale == 2
    assert int(np.argmax(energies)) == orientation
    # The opposite orientation gets almost nothing.
    assert energies[(orientation + 4) % 8] < 0.05 * energies[orientation]


def test_colour_grating_in_red_channel():
    config = gist.GistConfig(colour=True)
    image = grating("x")
    image[..., 1:] = 90  # green and blue constant
    descriptor = gist.gist_descriptor(image, config).reshape(3, -1)
    red, green, blue = descriptor.sum(axis=1)
    assert red > 0
    assert green < 1e-3 * red
    assert blue < 1e-3 * red
    # One channel has the layout of a grey descriptor with orientations 8, 8, 4.
    _, energies = orientation_energy(descriptor[0], gist.GistConfig(orientations_per_scale=config.orientations))
    assert int(np.argmax(energies)) == 0


def test_block_order_column_major():
    # Texture only in the top-right block of a 256x256 image: block row 0, column 3,
    # which is index 0 + 4 * 3 = 12 in LMgist's column-major order.
    image = np.full((256, 256, 3), 128, np.uint8)
    image[:64, 192:] = grating("x", height=64, width=64)
    config = gist.GistConfig()
    blocks = gist.gist_descriptor(image, config).reshape(-1, 16).sum(axis=0)
    assert int(np.argmax(blocks)) == 12


def test_gabor_filter_centre():
    size = 64
    filters = gist.gabor_transfer_functions((8, 4), size)
    assert filters.shape == (12, size, size)
    # Scale 0, orientation 0 peaks on the positive x frequency axis at 0.3 cycles per pixel.
    peak_row, peak_column = np.unravel_index(np.argmax(filters[0]), filters[0].shape)
    assert peak_row == 0
    assert peak_column == round(0.3 * size)
    assert filters[0].max() == pytest.approx(1.0, abs=0.02)


def test_block_means_layout():
    responses = np.arange(16, dtype=np.float64).reshape(4, 4)
    np.testing.assert_array_equal(gist.block_means(responses, 2), [2.5, 10.5, 4.5, 12.5])


def test_gist_system_ranks_same_image_first():
    system = make_system("gist")
    assert system.settings()["orientations_per_scale"] == [8, 8, 8, 8]
    pictures = [grating("x"), grating("y"), grating("x+y", period=9), np.random.default_rng(3).integers(
        0, 256, (200, 300, 3), dtype=np.uint8)]
    database = system.describe_database(pictures)
    ranks = system.rank([system.describe_query(picture, None) for picture in pictures], database)
    np.testing.assert_array_equal(ranks[0], np.arange(4))
