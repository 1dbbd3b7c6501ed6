"""CEDD, the Colour and Edge Directivity Descriptor, as LIRE computes it, and its Tanimoto similarity.

The image is cut into a grid of blocks. Each block gets a texture type from five 2x2
edge masks applied to the mean grey level of its four quadrants, and 24 fuzzy colour
memberships from its mean colour. Block memberships accumulate into a 6 x 24
histogram (texture-major), which is normalised to sum 1 and quantised to 3 bits per
bin.

Texture types (rows): 0 non-edge, 1 non-directional edge, 2 horizontal edge,
3 vertical edge, 4 45-degree edge, 5 135-degree edge.
Colours (columns): 0 white, 1 grey, 2 black, then light / normal / dark versions of
red, orange, yellow, green, cyan, blue and magenta (3 + 3 * hue + shade).

References:
  S. A. Chatzichristofis and Y. S. Boutalis, "CEDD: Color and Edge Directivity
  Descriptor. A Compact Descriptor for Image Indexing and Retrieval", ICVS 2008,
  LNCS 5008, pp. 312-322.
  LIRE (M. Lux), net.semanticmetadata.lire.imageanalysis.features.global.CEDD and its
  `cedd` package (grid rule, integer rounding, HSV conversion, quantisation tables),
  read in the dermotte/LIRE repository.
"""

import dataclasses

import numpy as np
from absl import logging

from pire_jax import images

HISTOGRAM_BINS = 144  # 6 texture types x 24 colours
N_TEXTURES = 6
N_COLOURS = 24
QUANTISATION_LEVELS = 8  # 3 bits per bin

# Edge thresholds of LIRE's default CEDD constructor (the paper's T0..T3). A block is
# non-edge when its strongest mask response is below T0 grey levels. Otherwise mask k
# counts when its response divided by the strongest one is above T1 (non-directional),
# T2 (horizontal, vertical) or T3 (diagonals).
DEFAULT_THRESHOLDS = (14.0, 0.68, 0.98, 0.98)
DEFAULT_BLOCKS_PER_SIDE = 40  # LIRE: 1600 blocks when the short side has at least 80 pixels

# LIRE's luma for the edge masks (Rec. 601, computed in float32 as LIRE does). This
# differs on purpose from `pire_jax.images.GREY_WEIGHTS` so that histograms match LIRE's.
CEDD_LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# Trapezoidal membership functions [a, b, c, d]: 0 below a, rising to 1 at b, 1 up to c,
# falling to 0 at d. Values from the CEDD paper (hue in degrees, S and V in 0..255).
HUE_MEMBERSHIPS = np.array(
    [
        [0, 0, 5, 10],  # red (low end)
        [5, 10, 35, 50],  # orange
        [35, 50, 70, 85],  # yellow
        [70, 85, 150, 165],  # green
        [150, 165, 195, 205],  # cyan
        [195, 205, 265, 280],  # blue
        [265, 280, 315, 330],  # magenta
        [315, 330, 360, 360],  # red (high end)
    ],
    dtype=np.float64,
)
SATURATION_MEMBERSHIPS_10 = np.array([[0, 0, 10, 75], [10, 75, 255, 255]], dtype=np.float64)
VALUE_MEMBERSHIPS_10 = np.array([[0, 0, 10, 75], [10, 75, 180, 220], [180, 220, 255, 255]], dtype=np.float64)
SATURATION_MEMBERSHIPS_24 = np.array([[0, 0, 68, 188], [68, 188, 255, 255]], dtype=np.float64)
VALUE_MEMBERSHIPS_24 = np.array([[0, 0, 68, 188], [68, 188, 255, 255]], dtype=np.float64)

# LIRE's CEDDQuant tables (units of 1e-6 of the normalised bin value): the 8 levels of
# each texture row. Rows 2 and 3 share a table, and so do rows 4 and 5.
_QUANTISATION_NON_EDGE = (180.19686541079636, 23730.024499150866, 61457.152912541605, 113918.55437576842,
                          179122.46400035513, 260980.3325940354, 341795.93301552488, 554729.98648386425)
_QUANTISATION_NON_DIRECTIONAL = (209.25176965926232, 22490.5872862417345, 60250.8935141849988,
                                 120705.788057580583, 181128.08709063051, 234132.081356900555,
                                 325660.617733105708, 520702.175858657472)
_QUANTISATION_STRAIGHT = (405.4642173212585, 4877.9763319071481, 10882.170090625908, 18167.239081219657,
                          27043.385568785292, 38129.413201299016, 52675.221316293857, 79555.402607004813)
_QUANTISATION_DIAGONAL = (968.88475977695578, 10725.159033657819, 24161.205360376698, 41555.917344385321,
                          62895.628446402261, 93066.271379694881, 136976.13317822068, 262897.86056221306)
QUANTISATION_LEVELS_PER_TEXTURE = np.array(
    [
        _QUANTISATION_NON_EDGE,
        _QUANTISATION_NON_DIRECTIONAL,
        _QUANTISATION_STRAIGHT,
        _QUANTISATION_STRAIGHT,
        _QUANTISATION_DIAGONAL,
        _QUANTISATION_DIAGONAL,
    ],
    dtype=np.float64,
) / 1e6


@dataclasses.dataclass(frozen=True)
class CeddConfig:
    """CEDD settings; the defaults are LIRE's.

    Attributes:
      thresholds: edge thresholds (T0 in grey levels, T1, T2, T3 as response ratios).
      blocks_per_side: grid size for images whose short side has at least twice this
        many pixels. Shorter images use half the grid, and images shorter than the grid
        use 2x2-pixel blocks over the whole image (LIRE's rule for 40).
      max_size: downscale images whose long side exceeds this many pixels first; None
        keeps the native resolution.
    """

    thresholds: tuple[float, float, float, float] = DEFAULT_THRESHOLDS
    blocks_per_side: int = DEFAULT_BLOCKS_PER_SIDE
    max_size: int | None = None

    def __post_init__(self):
        if len(self.thresholds) != 4:
            raise ValueError(f"Invalid CEDD thresholds {self.thresholds}; expected four values T0, T1, T2, T3.")
        if self.blocks_per_side < 2 or self.blocks_per_side % 2:
            raise ValueError(f"Invalid CEDD blocks_per_side {self.blocks_per_side}; expected an even number >= 2.")


def trapezoid_memberships(values: np.ndarray, trapezoids: np.ndarray) -> np.ndarray:
    """Evaluate trapezoidal membership functions.

    Args:
      values: float (n,).
      trapezoids: float (k, 4), rows [a, b, c, d].

    Returns:
      float64 (n, k) memberships in 0..1.
    """
    x = np.asarray(values, dtype=np.float64)[:, None]
    a, b, c, d = (trapezoids[None, :, column] for column in range(4))
    memberships = np.where((x >= b) & (x <= c), 1.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rising = (x - a) / (b - a)
        falling = (x - c) / (c - d) + 1.0
    memberships = np.where((x >= a) & (x < b), rising, memberships)
    memberships = np.where((x > c) & (x <= d), falling, memberships)
    return memberships


def lire_hsv(red: np.ndarray, green: np.ndarray, blue: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Convert integer RGB (0..255) to LIRE's integer HSV: hue 0..359 degrees, S and V 0..255.

    LIRE truncates to integers and uses 359 / 119 / 239 as the hue offsets of the red
    (green < blue), green and blue sectors.
    """
    red, green, blue = (np.asarray(channel, dtype=np.int64) for channel in (red, green, blue))
    maximum = np.maximum(red, np.maximum(green, blue))
    minimum = np.minimum(red, np.minimum(green, blue))
    value = maximum.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        saturation = np.where(maximum != 0, np.floor(255.0 - 255.0 * (minimum / value)), 0.0)
        spread = (maximum - minimum).astype(np.float64)
        hue_red_up = 60 * (green - blue) / spread
        hue_red_down = 359 + 60 * (green - blue) / spread
        hue_green = 119 + 60 * (blue - red) / spread
        hue_blue = 239 + 60 * (red - green) / spread
    hue = np.select(
        [
            maximum == minimum,
            (maximum == red) & (green >= blue),
            (maximum == red) & (green < blue),
            maximum == green,
        ],
        [np.zeros_like(value), hue_red_up, hue_red_down, hue_green],
        default=hue_blue,
    )
    return np.floor(hue), saturation, value


def _ten_colour_rules() -> tuple[np.ndarray, np.ndarray]:
    """Return the 48 rules (hue, saturation, value) -> 10-bin colour, as index and output arrays.

    At low saturation, a dark value gives black (2), a medium value grey (1) and a
    bright value white (0). At high saturation, a dark value gives black and the other
    values give the hue's colour: 3 red, 4 orange, ..., 9 magenta, and red again for
    the last hue set (7).
    """
    inputs, outputs = [], []
    for hue in range(8):
        colour = 3 + (hue % 7)
        for saturation, value, output in ((0, 0, 2), (1, 0, 2), (0, 2, 0), (0, 1, 1), (1, 1, colour), (1, 2, colour)):
            inputs.append((hue, saturation, value))
            outputs.append(output)
    return np.array(inputs), np.array(outputs)


_TEN_RULE_INPUTS, _TEN_RULE_OUTPUTS = _ten_colour_rules()
# (saturation, value) -> shade of a chromatic colour: 0 light, 1 normal, 2 dark.
_SHADE_RULES = ((1, 1, 1), (0, 0, 2), (0, 1, 0), (1, 0, 2))


def fuzzy_ten_bin(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Compute the 10-bin fuzzy colour histogram of each HSV triple (LIRE's multi-participate rule).

    Every rule whose three memberships are positive adds their minimum to its output bin.

    Returns:
      float64 (n, 10).
    """
    hue_m = trapezoid_memberships(hue, HUE_MEMBERSHIPS)
    saturation_m = trapezoid_memberships(saturation, SATURATION_MEMBERSHIPS_10)
    value_m = trapezoid_memberships(value, VALUE_MEMBERSHIPS_10)
    strengths = np.minimum(
        hue_m[:, _TEN_RULE_INPUTS[:, 0]],
        np.minimum(saturation_m[:, _TEN_RULE_INPUTS[:, 1]], value_m[:, _TEN_RULE_INPUTS[:, 2]]),
    )
    rule_to_bin = np.zeros((len(_TEN_RULE_OUTPUTS), 10))
    rule_to_bin[np.arange(len(_TEN_RULE_OUTPUTS)), _TEN_RULE_OUTPUTS] = 1.0
    return strengths @ rule_to_bin


def fuzzy_twenty_four_bin(saturation: np.ndarray, value: np.ndarray, ten_bin: np.ndarray) -> np.ndarray:
    """Split the 7 chromatic bins of the 10-bin histogram into light, normal and dark shades.

    Returns:
      float64 (n, 24): white, grey and black are copied; bin 3 + 3 * c + shade gets
      ten_bin[3 + c] times the shade membership.
    """
    saturation_m = trapezoid_memberships(saturation, SATURATION_MEMBERSHIPS_24)
    value_m = trapezoid_memberships(value, VALUE_MEMBERSHIPS_24)
    shades = np.zeros((ten_bin.shape[0], 3))
    for saturation_set, value_set, shade in _SHADE_RULES:
        shades[:, shade] += np.minimum(saturation_m[:, saturation_set], value_m[:, value_set])
    twenty_four = np.empty((ten_bin.shape[0], N_COLOURS))
    twenty_four[:, :3] = ten_bin[:, :3]
    twenty_four[:, 3:] = (ten_bin[:, 3:, None] * shades[:, None, :]).reshape(-1, 21)
    return twenty_four


def colour_memberships(mean_rgb: np.ndarray) -> np.ndarray:
    """Return the 24-bin fuzzy colour memberships of integer mean colours (n, 3), float64 (n, 24)."""
    mean_rgb = np.asarray(mean_rgb, dtype=np.int64).reshape(-1, 3)
    hue, saturation, value = lire_hsv(mean_rgb[:, 0], mean_rgb[:, 1], mean_rgb[:, 2])
    return fuzzy_twenty_four_bin(saturation, value, fuzzy_ten_bin(hue, saturation, value))


def texture_types(quadrant_means: np.ndarray, thresholds=DEFAULT_THRESHOLDS) -> np.ndarray:
    """Classify blocks by the five CEDD edge masks.

    Args:
      quadrant_means: float (n, 4) mean grey levels of the top-left, top-right,
        bottom-left and bottom-right quadrants (LIRE truncates them to integers).
      thresholds: T0, T1, T2, T3.

    Returns:
      bool (n, 6): the texture types of each block (a block can have several edges).
    """
    t0, t1, t2, t3 = thresholds
    a1, a2, a3, a4 = (quadrant_means[:, column].astype(np.float64) for column in range(4))
    root2 = np.sqrt(2.0)
    responses = np.abs(
        np.stack(
            [
                a1 * 2 + a2 * -2 + a3 * -2 + a4 * 2,  # non-directional
                a1 * 1 + a2 * 1 + a3 * -1 + a4 * -1,  # horizontal edge: top minus bottom
                a1 * 1 + a2 * -1 + a3 * 1 + a4 * -1,  # vertical edge: left minus right
                a1 * root2 + a2 * 0 + a3 * 0 + a4 * -root2,  # 45 degrees
                a1 * 0 + a2 * root2 + a3 * -root2 + a4 * 0,  # 135 degrees
            ],
            axis=1,
        )
    )
    strongest = responses.max(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = responses / strongest[:, None]
    is_edge = strongest >= t0
    types = np.zeros((quadrant_means.shape[0], N_TEXTURES), dtype=bool)
    types[:, 0] = ~is_edge
    types[:, 1:] = is_edge[:, None] & (ratios > np.array([t1, t2, t2, t3, t3]))
    return types


def _block_grid(height: int, width: int, blocks_per_side: int) -> tuple[int, int, int, int]:
    """Return (step_y, step_x, rows, columns) of LIRE's block grid; steps are even pixel counts."""
    short_side = min(height, width)
    if short_side >= 2 * blocks_per_side:
        side = blocks_per_side
    elif short_side >= blocks_per_side:
        side = blocks_per_side // 2
    else:
        return 2, 2, height // 2, width // 2
    step_x = width // side
    step_y = height // side
    step_x -= step_x % 2
    step_y -= step_y % 2
    return step_y, step_x, side, side


def quantize_histogram(histogram: np.ndarray) -> np.ndarray:
    """Quantise a normalised 144-bin histogram to 3 bits with LIRE's per-texture tables (uint8 0..7)."""
    histogram = np.asarray(histogram, dtype=np.float64).reshape(N_TEXTURES, N_COLOURS)
    distances = np.abs(histogram[:, :, None] - QUANTISATION_LEVELS_PER_TEXTURE[:, None, :])
    return distances.argmin(axis=2).astype(np.uint8).reshape(HISTOGRAM_BINS)


def cedd_histogram(image: np.ndarray, config: CeddConfig = CeddConfig()) -> np.ndarray:
    """Compute the quantised CEDD descriptor of an image.

    Args:
      image: uint8 RGB (H, W, 3).
      config: CEDD settings.

    Returns:
      uint8 (144,), values 0..7, texture-major (bin = 24 * texture + colour). An image
      smaller than 2x2 pixels has no block and gives all zeros (logged).
    """
    images.check_uint8_image(image, "image for CEDD")
    image = images.resize_long_side(image, config.max_size)
    height, width = image.shape[:2]
    step_y, step_x, rows, columns = _block_grid(height, width, config.blocks_per_side)
    if rows == 0 or columns == 0:
        logging.warning("CEDD: image of %dx%d pixels has no 2x2 block; returning an empty histogram.", width, height)
        return np.zeros(HISTOGRAM_BINS, np.uint8)

    # Blocks tile the top-left rows*step_y x columns*step_x pixels; LIRE ignores the rest.
    pixels = image[: rows * step_y, : columns * step_x].astype(np.int64)
    blocks = pixels.reshape(rows, step_y, columns, step_x, 3).transpose(0, 2, 1, 3, 4)
    blocks = blocks.reshape(rows * columns, step_y, step_x, 3)

    # Grey levels in float32 arithmetic, as LIRE computes them, then exact float64 sums.
    luma = np.asarray(CEDD_LUMA_WEIGHTS, dtype=np.float32)
    grey = (luma[0] * blocks[..., 0].astype(np.float32) + luma[1] * blocks[..., 1].astype(np.float32))
    grey = (grey + luma[2] * blocks[..., 2].astype(np.float32)).astype(np.float64)
    half_y, half_x = step_y // 2, step_x // 2
    quadrant_sums = np.stack(
        [
            grey[:, :half_y, :half_x].sum(axis=(1, 2)),
            grey[:, :half_y, half_x:].sum(axis=(1, 2)),
            grey[:, half_y:, :half_x].sum(axis=(1, 2)),
            grey[:, half_y:, half_x:].sum(axis=(1, 2)),
        ],
        axis=1,
    )
    # LIRE scales each quadrant sum by 4 / block area and truncates to an integer.
    quadrant_means = np.floor(quadrant_sums * (4.0 / (step_x * step_y)))
    types = texture_types(quadrant_means, config.thresholds)

    # Mean colour per block with integer division, as LIRE does.
    mean_rgb = blocks.sum(axis=(1, 2)) // (step_x * step_y)
    colours = colour_memberships(mean_rgb)

    histogram = (types.T.astype(np.float64) @ colours).reshape(HISTOGRAM_BINS)
    total = histogram.sum()
    if total <= 0:
        logging.warning("CEDD: empty histogram for an image of %dx%d pixels.", width, height)
        return np.zeros(HISTOGRAM_BINS, np.uint8)
    return quantize_histogram(histogram / total)


def tanimoto_similarity(queries: np.ndarray, database: np.ndarray) -> np.ndarray:
    """Tanimoto coefficient between CEDD histograms, LIRE's similarity for CEDD.

    Each histogram is divided by its sum, then T(a, b) = a.b / (a.a + b.b - a.b). Two
    empty histograms have similarity 1, an empty and a non-empty one 0.

    Args:
      queries: (n_queries, 144).
      database: (n_database, 144).

    Returns:
      float64 (n_database, n_queries), 1 for identical histograms.
    """
    queries = np.asarray(queries, dtype=np.float64)
    database = np.asarray(database, dtype=np.float64)
    if queries.ndim != 2 or database.ndim != 2 or queries.shape[1] != database.shape[1]:
        raise ValueError(
            f"Invalid histogram shapes: queries {queries.shape}, database {database.shape}; expected (n, bins) "
            "with the same bins."
        )
    query_sums = queries.sum(axis=1)
    database_sums = database.sum(axis=1)
    normalised_queries = queries / np.where(query_sums > 0, query_sums, 1.0)[:, None]
    normalised_database = database / np.where(database_sums > 0, database_sums, 1.0)[:, None]

    dot = normalised_database @ normalised_queries.T
    query_squares = (normalised_queries**2).sum(axis=1)
    database_squares = (normalised_database**2).sum(axis=1)
    denominator = database_squares[:, None] + query_squares[None, :] - dot
    similarity = np.divide(dot, denominator, out=np.zeros_like(dot), where=denominator > 0)

    both_empty = (database_sums[:, None] == 0) & (query_sums[None, :] == 0)
    similarity[both_empty] = 1.0
    return similarity
