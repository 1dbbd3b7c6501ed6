"""Exact linear model of the SIFT scale space: every DoG value is a fixed linear function of the image.

Upsampling, Gaussian blurs with reflected borders, subsampling and differences are all
linear and act on rows and columns separately. So Gaussian layer i of octave o is
`R[o][i] @ image @ C[o][i].T`, where R and C are (octave rows x image rows) and
(octave cols x image cols) matrices, and a DoG value is the difference of two such
bilinear forms. The keypoint attacks use this to compute, without any search,
  * the DoG value at any pyramid position (`dog_values`),
  * the DoG kernel of a position, i.e. the image whose inner product with any image is
    that DoG value (`dog_kernel`), which is the minimum-L2 direction to change it,
  * the effect of a pixel window on nearby DoG values (`window_responses`).

R and C are built once per image size with scipy.sparse and stored as banded rows
(every row is non-zero on one contiguous run of columns), which keeps a 1024 x 768
image at a few MB. They reproduce `scale_space.build_gaussian_pyramid`, including its
borders; the tests check the agreement.
"""

import dataclasses
import functools

import cv2
import numpy as np
from scipy import sparse

from pire_jax.attacks.keypoints import scale_space


@dataclasses.dataclass(frozen=True)
class BandedRows:
    """A matrix whose row i is non-zero only in columns start[i] .. start[i] + width - 1.

    Attributes:
      start: int64 (rows,), first column of each row's band, clamped so the band fits.
      values: float64 (rows, width), the band of each row.
      columns: number of columns of the full matrix.
    """

    start: np.ndarray
    values: np.ndarray
    columns: int

    @property
    def width(self) -> int:
        return self.values.shape[1]

    def dense_rows(self, rows: np.ndarray) -> tuple[int, np.ndarray]:
        """Return rows as one dense block over the union of their bands.

        Args:
          rows: int array of row indices.

        Returns:
          (first column of the block, float64 array (len(rows), block width)).
        """
        rows = np.asarray(rows, dtype=np.int64)
        first = int(self.start[rows].min())
        last = int(self.start[rows].max()) + self.width
        block = np.zeros((len(rows), last - first))
        shift = self.start[rows] - first
        columns = shift[:, None] + np.arange(self.width)[None, :]
        block[np.arange(len(rows))[:, None], columns] = self.values[rows]
        return first, block

    @staticmethod
    def from_sparse(matrix: sparse.csr_matrix, relative_tolerance: float = 0.0) -> "BandedRows":
        """Store a CSR matrix whose rows each have one contiguous support as bands.

        Args:
          matrix: the operator.
          relative_tolerance: entries below this fraction of their row's largest entry
            are dropped from the ends of the band.
        """
        matrix = matrix.tocsr()
        matrix.sort_indices()
        if relative_tolerance > 0:
            row_max = np.maximum.reduceat(np.abs(matrix.data), matrix.indptr[:-1])
            row_of_entry = np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr))
            matrix.data[np.abs(matrix.data) < relative_tolerance * row_max[row_of_entry]] = 0.0
            matrix.eliminate_zeros()
        rows, columns = matrix.shape
        counts = np.diff(matrix.indptr)
        if np.any(counts == 0):
            raise ValueError("Every row of a scale-space operator must have a non-zero entry.")
        first = matrix.indices[matrix.indptr[:-1]]
        last = matrix.indices[matrix.indptr[1:] - 1]
        width = int(np.max(last - first + 1))
        start = np.minimum(first, columns - width).astype(np.int64)
        values = np.zeros((rows, width))
        row_of_entry = np.repeat(np.arange(rows), counts)
        values[row_of_entry, matrix.indices - start[row_of_entry]] = matrix.data
        return BandedRows(start=start, values=values, columns=columns)


# Operator entries below this fraction of their row's peak are dropped. The Gaussian
# tails they contain change a DoG value by less than 1e-3 grey levels, and keeping them
# would make every band of the coarse octaves as wide as the image.
BAND_RELATIVE_TOLERANCE = 1e-7


def _upsample_matrix(length: int) -> sparse.csr_matrix:
    """Bilinear x2 upsampling as cv2.resize(INTER_LINEAR) does it: (2 length, length).

    Output pixel i samples the input at (i + 0.5) / 2 - 0.5, and positions outside the
    input take the nearest border pixel.
    """
    positions = (np.arange(2 * length) + 0.5) / 2.0 - 0.5
    left = np.floor(positions).astype(np.int64)
    fraction = positions - left
    before = left < 0
    fraction[before] = 0.0
    left[before] = 0
    after = left >= length - 1
    fraction[after] = 0.0
    left[after] = length - 1
    right = np.minimum(left + 1, length - 1)
    rows = np.concatenate([np.arange(2 * length)] * 2)
    columns = np.concatenate([left, right])
    weights = np.concatenate([1.0 - fraction, fraction])
    return sparse.csr_matrix((weights, (rows, columns)), shape=(2 * length, length))


def _blur_matrix(length: int, sigma: float) -> sparse.csr_matrix:
    """cv2.GaussianBlur along one axis (float kernel, BORDER_REFLECT_101): (length, length)."""
    size = scale_space.gaussian_kernel_size(sigma)
    kernel = cv2.getGaussianKernel(size, sigma, cv2.CV_32F).astype(np.float64).ravel()
    radius = size // 2
    offsets = np.arange(-radius, radius + 1)
    rows = np.repeat(np.arange(length), size)
    columns = (np.arange(length)[:, None] + offsets[None, :]).ravel()
    # Reflect-101 (... c b | a b c ... | b a ...) repeatedly, for kernels wider than the axis.
    period = max(2 * (length - 1), 1)
    columns = np.mod(columns, period)
    columns = np.where(columns >= length, period - columns, columns)
    weights = np.tile(kernel, length)
    return sparse.csr_matrix((weights, (rows, columns)), shape=(length, length))


def _subsample_matrix(length: int) -> sparse.csr_matrix:
    """Build the matrix that keeps every second sample, starting at 0: (length // 2, length)."""
    count = length // 2
    return sparse.csr_matrix((np.ones(count), (np.arange(count), 2 * np.arange(count))), shape=(count, length))


def build_axis_operators(
    length: int, num_octaves: int, parameters: scale_space.SiftParameters
) -> list[list[BandedRows]]:
    """Build the one-axis operators of every Gaussian layer of every octave.

    Args:
      length: image rows (for R) or columns (for C).
      num_octaves: octaves of the pyramid (`scale_space.count_octaves`).
      parameters: detector settings.

    Returns:
      operators[o][i], a BandedRows of shape (octave length, length).
    """
    sigmas = parameters.layer_sigmas()
    current = _blur_matrix(2 * length, parameters.initial_blur()) @ _upsample_matrix(length)
    operators = []
    for octave in range(num_octaves):
        if octave > 0:
            source = layers_sparse[parameters.num_octave_layers]
            current = _subsample_matrix(source.shape[0]) @ source
        layers_sparse = [current.tocsr()]
        for i in range(1, parameters.num_octave_layers + 3):
            layers_sparse.append((_blur_matrix(current.shape[0], sigmas[i]) @ layers_sparse[-1]).tocsr())
        operators.append([BandedRows.from_sparse(layer, BAND_RELATIVE_TOLERANCE) for layer in layers_sparse])
    return operators


class DogLinearModel:
    """Row and column operators of the SIFT scale space of one image size.

    Args:
      height, width: image size in pixels.
      parameters: detector settings.
    """

    def __init__(self, height: int, width: int, parameters: scale_space.SiftParameters = scale_space.DEFAULT_PARAMETERS):
        self.height = height
        self.width = width
        self.parameters = parameters
        self.num_octaves = scale_space.count_octaves(height, width)
        self.octave_shapes = scale_space.octave_shapes(height, width)
        self.row_operators = build_axis_operators(height, self.num_octaves, parameters)
        self.column_operators = build_axis_operators(width, self.num_octaves, parameters)

    def _gaussian_factors(self, octave: int, gaussian_layers, rows, cols):
        """Dense row and column factors of several Gaussian layers over common windows."""
        row_blocks = [self.row_operators[octave][g].dense_rows(rows) for g in gaussian_layers]
        col_blocks = [self.column_operators[octave][g].dense_rows(cols) for g in gaussian_layers]
        return _align(row_blocks), _align(col_blocks)

    def dog_values(self, image: np.ndarray, octave: int, layers, rows, cols) -> np.ndarray:
        """Compute DoG values of an image exactly at a grid of positions.

        Args:
          image: grey image (height, width), grey levels.
          octave: pyramid octave.
          layers, rows, cols: int sequences of DoG layers and octave rows/cols.

        Returns:
          float64 array (len(layers), len(rows), len(cols)), grey levels.
        """
        layers = np.asarray(layers, dtype=np.int64)
        gaussian_layers = np.arange(layers.min(), layers.max() + 2)
        row_block, col_block = self._gaussian_factors(octave, gaussian_layers, rows, cols)
        gaussians = _apply_factors(image, row_block, col_block)
        index = layers - gaussian_layers[0]
        return gaussians[index + 1] - gaussians[index]

    def dog_kernel(self, octave: int, layer: int, row: int, col: int) -> tuple[int, int, np.ndarray]:
        """Return the image k with <k, image> = DoG(octave, layer, row, col) of any image.

        Returns:
          (first row, first column, float64 patch); k is zero outside the patch.
        """
        (row_start, row_factors), (col_start, col_factors) = self._gaussian_factors(
            octave, (layer, layer + 1), [row], [col]
        )
        patch = np.outer(row_factors[1, 0], col_factors[1, 0]) - np.outer(row_factors[0, 0], col_factors[0, 0])
        return row_start, col_start, patch

    def dog_kernel_factors(self, octave: int, layer: int, row: int, col: int):
        """Return the rank-2 factors of a DoG kernel: k = outer(r1, c1) - outer(r0, c0).

        Returns:
          (first row, first column, r (2, rows), c (2, cols)); index 1 is Gaussian layer
          layer + 1, index 0 is Gaussian layer `layer`.
        """
        (row_start, row_factors), (col_start, col_factors) = self._gaussian_factors(
            octave, (layer, layer + 1), [row], [col]
        )
        return row_start, col_start, row_factors[:, 0], col_factors[:, 0]

    def dog_kernel_norm_squared(self, octave: int, layer: int, row: int, col: int) -> float:
        """Return ||k||^2 of a DoG kernel, the DoG change per unit of the minimum-L2 patch."""
        _, _, rows, cols = self.dog_kernel_factors(octave, layer, row, col)
        row_gram = rows @ rows.T
        col_gram = cols @ cols.T
        return float(row_gram[1, 1] * col_gram[1, 1] + row_gram[0, 0] * col_gram[0, 0] - 2 * row_gram[0, 1] * col_gram[0, 1])

    def patch_dog_values(
        self, row_start: int, col_start: int, patch: np.ndarray, octave: int, layers, rows, cols
    ) -> np.ndarray:
        """Compute DoG values of an image that is zero except for a patch.

        Args:
          row_start, col_start: image position of the patch's top-left pixel.
          patch: float array, grey levels.
          octave, layers, rows, cols: DoG positions as in `dog_values`.

        Returns:
          float64 array (len(layers), len(rows), len(cols)), grey levels.
        """
        layers = np.asarray(layers, dtype=np.int64)
        gaussian_layers = np.arange(layers.min(), layers.max() + 2)
        (factor_row_start, row_factors), (factor_col_start, col_factors) = self._gaussian_factors(
            octave, gaussian_layers, rows, cols
        )
        canvas = np.zeros((row_factors.shape[2], col_factors.shape[2]))
        top, left = max(row_start, factor_row_start), max(col_start, factor_col_start)
        bottom = min(row_start + patch.shape[0], factor_row_start + canvas.shape[0])
        right = min(col_start + patch.shape[1], factor_col_start + canvas.shape[1])
        if bottom > top and right > left:
            canvas[top - factor_row_start : bottom - factor_row_start, left - factor_col_start : right - factor_col_start] = (
                patch[top - row_start : bottom - row_start, left - col_start : right - col_start]
            )
        gaussians = _apply_factors(canvas, (0, row_factors), (0, col_factors))
        index = layers - gaussian_layers[0]
        return gaussians[index + 1] - gaussians[index]

    def window_responses(self, image: np.ndarray, octave: int, layers, rows, cols, row_blocks, col_blocks):
        """Compute DoG values at a grid of positions and how a pixel window moves them.

        The window is a grid of pixel blocks; block (a, b) covers image rows
        row_blocks[a][0] .. row_blocks[a][1] - 1 and the same for columns. Adding t
        grey levels to every pixel of block (a, b) changes DoG(layer, row, col) by
        t * responses[layer, row, col, a, b].

        Returns:
          (values, float64 (len(layers), len(rows), len(cols)), grey levels;
          responses, float64 (len(layers), len(rows), len(cols), len(row_blocks), len(col_blocks))).
        """
        layers = np.asarray(layers, dtype=np.int64)
        gaussian_layers = np.arange(layers.min(), layers.max() + 2)
        row_block, col_block = self._gaussian_factors(octave, gaussian_layers, rows, cols)
        gaussians = _apply_factors(image, row_block, col_block)
        row_sums = _block_sums(row_block[1], row_block[0], row_blocks)
        col_sums = _block_sums(col_block[1], col_block[0], col_blocks)
        gaussian_responses = row_sums[:, :, None, :, None] * col_sums[:, None, :, None, :]
        index = layers - gaussian_layers[0]
        values = gaussians[index + 1] - gaussians[index]
        responses = gaussian_responses[index + 1] - gaussian_responses[index]
        return values, responses


def _apply_factors(image: np.ndarray, row_block, col_block) -> np.ndarray:
    """Return R_g @ image @ C_g.T for every layer g of aligned factor blocks."""
    row_start, row_factors = row_block
    col_start, col_factors = col_block
    layers, row_count, row_width = row_factors.shape
    window = image[row_start : row_start + row_width, col_start : col_start + col_factors.shape[2]]
    partial = row_factors.reshape(layers * row_count, row_width) @ np.asarray(window, dtype=np.float64)
    return np.einsum("gib,gjb->gij", partial.reshape(layers, row_count, -1), col_factors)


def _align(blocks):
    """Place (start, dense) row blocks of several layers on one common column window."""
    first = min(start for start, _ in blocks)
    last = max(start + dense.shape[1] for start, dense in blocks)
    aligned = np.zeros((len(blocks), blocks[0][1].shape[0], last - first))
    for index, (start, dense) in enumerate(blocks):
        aligned[index, :, start - first : start - first + dense.shape[1]] = dense
    return first, aligned


def _block_sums(factors: np.ndarray, start: int, blocks) -> np.ndarray:
    """Sum factor columns over pixel blocks [begin, end); blocks outside the factor add 0."""
    sums = np.zeros(factors.shape[:2] + (len(blocks),))
    width = factors.shape[2]
    for index, (begin, end) in enumerate(blocks):
        begin = max(begin - start, 0)
        end = min(end - start, width)
        if end > begin:
            sums[:, :, index] = factors[:, :, begin:end].sum(axis=2)
    return sums


@functools.lru_cache(maxsize=4)
def linear_model_for(height: int, width: int, parameters: scale_space.SiftParameters) -> DogLinearModel:
    """Return the linear model of an image size, cached because building it takes 0.1 to 0.5 s."""
    return DogLinearModel(height, width, parameters)
