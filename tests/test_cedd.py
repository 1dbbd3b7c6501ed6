"""Tests of the CEDD descriptor (LIRE rules) and the cedd retrieval system."""

import numpy as np
import pytest

from pire_jax.global_features import cedd
from pire_jax.retrieval import make_system

WHITE, GREY, BLACK = (255, 255, 255), (127, 127, 127), (0, 0, 0)
RED = (255, 0, 0)


def block(top_left, top_right, bottom_left, bottom_right, size: int = 10) -> np.ndarray:
    """Return one size x size block whose four quadrants have the given colours."""
    half = size // 2
    pixels = np.zeros((size, size, 3), np.uint8)
    pixels[:half, :half] = top_left
    pixels[:half, half:] = top_right
    pixels[half:, :half] = bottom_left
    pixels[half:, half:] = bottom_right
    return pixels


def tiled(pattern: np.ndarray, blocks: int = 40) -> np.ndarray:
    """Repeat a block on a blocks x blocks grid, so that each CEDD block covers the pattern once."""
    return np.tile(pattern, (blocks, blocks, 1))


def nonzero_bins(histogram: np.ndarray) -> dict[tuple[int, int], int]:
    return {(int(index) // 24, int(index) % 24): int(histogram[index]) for index in np.flatnonzero(histogram)}


@pytest.mark.parametrize(
    "quadrants, texture",
    [
        ((WHITE, WHITE, BLACK, BLACK), 2),  # horizontal edge
        ((WHITE, BLACK, WHITE, BLACK), 3),  # vertical edge
        ((WHITE, BLACK, BLACK, WHITE), 1),  # non-directional (checker)
        ((WHITE, GREY, GREY, BLACK), 4),  # 45 degrees: top-left against bottom-right
        ((GREY, WHITE, BLACK, GREY), 5),  # 135 degrees: top-right against bottom-left
    ],
)
def test_edge_blocks_fill_texture_bin(quadrants, texture):
    image = tiled(block(*quadrants))
    histogram = cedd.cedd_histogram(image)
    assert histogram.shape == (144,)
    assert histogram.dtype == np.uint8
    # Mean colour of every block is a mid grey: colour bin 1; all mass in one bin
    # quantises to the top level 7.
    assert nonzero_bins(histogram) == {(texture, 1): 7}


def test_uniform_red_is_non_edge_red():
    histogram = cedd.cedd_histogram(tiled(block(RED, RED, RED, RED)))
    assert nonzero_bins(histogram) == {(0, 4): 7}


def test_mixed_blocks_split_mass():
    # Left half of the grid: horizontal-edge grey blocks; right half: flat red blocks.
    left = np.tile(block(WHITE, WHITE, BLACK, BLACK), (40, 20, 1))
    right = np.tile(block(RED, RED, RED, RED), (40, 20, 1))
    histogram = cedd.cedd_histogram(np.concatenate([left, right], axis=1))
    # Each bin gets 0.5 of the mass. That is level 7 in the non-edge table (0.5547 is the
    # nearest level) and in the horizontal-edge table (0.0796 is its highest level).
    assert nonzero_bins(histogram) == {(0, 4): 7, (2, 1): 7}


def test_edge_strength_threshold():
    # The horizontal mask responds with twice the step between top and bottom halves:
    # a step of 6 grey levels gives 12, below T0 = 14 (non-edge), a step of 7 gives 14.
    dark = (100, 100, 100)
    weak = cedd.cedd_histogram(tiled(block((106,) * 3, (106,) * 3, dark, dark)))
    assert list(nonzero_bins(weak)) == [(0, 1)]
    strong = cedd.cedd_histogram(tiled(block((107,) * 3, (107,) * 3, dark, dark)))
    assert list(nonzero_bins(strong)) == [(2, 1)]


def test_lire_hsv_values():
    rgb = np.array([[255, 0, 0], [0, 255, 0], [0, 0, 255], [255, 255, 0], [128, 128, 128], [0, 0, 0], [255, 0, 128]])
    hue, saturation, value = cedd.lire_hsv(rgb[:, 0], rgb[:, 1], rgb[:, 2])
    np.testing.assert_array_equal(hue, [0, 119, 239, 60, 0, 0, 328])
    np.testing.assert_array_equal(saturation, [255, 255, 255, 255, 0, 0, 255])
    np.testing.assert_array_equal(value, [255, 255, 255, 255, 128, 0, 255])


def test_colour_memberships_of_known_colours():
    colours = cedd.colour_memberships(
        np.array([[255, 255, 255], [127, 127, 127], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [128, 0, 0]])
    )
    assert colours.shape == (7, 24)
    expected = {0: {0: 1.0}, 1: {1: 1.0}, 2: {2: 1.0}, 3: {4: 1.0}, 4: {13: 1.0}, 5: {19: 1.0}, 6: {4: 0.5, 5: 0.5}}
    for row, bins in expected.items():
        reference = np.zeros(24)
        for column, membership in bins.items():
            reference[column] = membership
        np.testing.assert_allclose(colours[row], reference, atol=1e-9, err_msg=f"colour row {row}")


def test_ten_bin_memberships_sum_to_one():
    rgb = np.random.default_rng(0).integers(0, 256, (500, 3))
    hue, saturation, value = cedd.lire_hsv(rgb[:, 0], rgb[:, 1], rgb[:, 2])
    ten_bin = cedd.fuzzy_ten_bin(hue, saturation, value)
    # Neighbouring trapezoids cross at 0.5, so the memberships of each colour sum to
    # 1 or more, never 0.
    assert ten_bin.sum(axis=1).min() >= 1.0 - 1e-9


def test_quantisation_levels():
    histogram = np.zeros(144)
    histogram[0] = 1.0
    quantised = cedd.quantize_histogram(histogram)
    assert quantised[0] == 7
    assert quantised[1:].max() == 0
    histogram[:] = 0
    histogram[50] = 0.011  # horizontal-edge table: nearest level is 0.010882 (level 2)
    assert cedd.quantize_histogram(histogram)[50] == 2


@pytest.mark.parametrize(
    "shape, grid",
    [((400, 400), (10, 10, 40, 40)), ((79, 200), (2, 10, 20, 20)), ((82, 123), (2, 2, 40, 40)), ((30, 31), (2, 2, 15, 15))],
)
def test_block_grid_rule(shape, grid):
    assert cedd._block_grid(*shape, cedd.DEFAULT_BLOCKS_PER_SIDE) == grid


def test_tiny_image_empty_histogram():
    histogram = cedd.cedd_histogram(np.zeros((1, 5, 3), np.uint8))
    np.testing.assert_array_equal(histogram, 0)


def test_tanimoto_identical_is_one():
    rng = np.random.default_rng(1)
    histograms = rng.integers(0, 8, (5, 144)).astype(np.uint8)
    similarity = cedd.tanimoto_similarity(histograms, histograms)
    assert similarity.shape == (5, 5)
    np.testing.assert_allclose(np.diag(similarity), 1.0)
    assert similarity[~np.eye(5, dtype=bool)].max() < 1.0


def test_tanimoto_edge_cases():
    first = np.zeros((1, 144))
    first[0, 0] = 3
    disjoint = np.zeros((1, 144))
    disjoint[0, 1] = 3
    empty = np.zeros((1, 144))
    assert cedd.tanimoto_similarity(first, disjoint)[0, 0] == 0.0
    assert cedd.tanimoto_similarity(first, empty)[0, 0] == 0.0
    assert cedd.tanimoto_similarity(empty, empty)[0, 0] == 1.0
    # Tanimoto of a histogram and twice itself is 1: LIRE normalises by the sum first.
    assert cedd.tanimoto_similarity(first, 2 * first)[0, 0] == pytest.approx(1.0)


def test_cedd_system_ranks_same_image_first():
    system = make_system("cedd")
    patterns = [
        tiled(block(WHITE, WHITE, BLACK, BLACK)),
        tiled(block(RED, RED, RED, RED)),
        tiled(block(WHITE, BLACK, WHITE, BLACK)),
        np.random.default_rng(2).integers(0, 256, (300, 400, 3), dtype=np.uint8),
    ]
    database = system.describe_database(patterns)
    ranks = system.rank([system.describe_query(image, None) for image in patterns], database)
    assert ranks.shape == (4, 4)
    np.testing.assert_array_equal(ranks[0], np.arange(4))
    # A box query is cropped before description.
    wide = np.concatenate([patterns[1], patterns[3][:, :200].repeat(2, axis=0)[:400]], axis=1)
    box_query = system.describe_query(wide, [0, 0, 400, 400])
    np.testing.assert_array_equal(box_query, database[1])
