"""GIST: Gabor filter energies averaged on a coarse grid, after LMgist (Oliva and Torralba).

Grey GIST (LMgist defaults): grey = mean of R, G, B; resize so that the image covers
256x256 and crop the centre; stretch to 0..255; prefilter (log, whitening with a
Gaussian of fc = 4 cycles per image, local contrast normalisation); pad 32 pixels
symmetrically; filter with 4 scales x 8 orientations of Gabor-like transfer functions
in the frequency domain; average the response magnitudes over 4x4 blocks. This gives
32 x 16 = 512 values.

Colour GIST (lear's C code, `color_gist_scaletab`): the same on the three RGB channels
without the grey conversion or the 0..255 stretch, with one local contrast
normalisation shared by the channels, and orientations 8, 8, 4 per scale:
3 x 20 x 16 = 960 values. Unlike lear, which filters the image as given without
padding, we also resize and crop to `image_size` and keep the boundary extension
unless `boundary_extension` is 0.

Layout of the output: channel, then filter (scales from high to low frequency,
orientations in order), then block in column-major order (block row + 4 * block
column), as LMgist and lear return it.

References:
  A. Oliva and A. Torralba, "Modeling the shape of the scene: a holistic
  representation of the spatial envelope", IJCV 42(3), 2001.
  LMgist.m, createGabor.m and imresizecrop.m of the LabelMe toolbox (MATLAB), and
  lear_gist 1.1 gist.c (INRIA, M. Douze), read in public copies.
"""

import dataclasses

import numpy as np
from PIL import Image

from pire_jax import images

GREY_ORIENTATIONS = (8, 8, 8, 8)  # LMgist demo settings
COLOUR_ORIENTATIONS = (8, 8, 4)  # lear_gist defaults
PREFILTER_PADDING = 5  # pixels of symmetric padding inside LMgist's prefilt
LOCAL_CONTRAST_OFFSET = 0.2  # LMgist prefilt: output / (0.2 + local std)


@dataclasses.dataclass(frozen=True)
class GistConfig:
    """GIST settings; the defaults give LMgist's 512-d grey descriptor.

    Attributes:
      colour: compute the 960-d colour variant of lear's C code instead.
      image_size: side of the square image the filters run on, in pixels.
      orientations_per_scale: orientations at each scale, high frequency first; None
        uses (8, 8, 8, 8) for grey and (8, 8, 4) for colour.
      n_blocks: the responses are averaged on an n_blocks x n_blocks grid.
      prefilter_fc: cut-off of the whitening and contrast filters, in cycles per image.
      boundary_extension: symmetric padding before Gabor filtering, in pixels.
    """

    colour: bool = False
    image_size: int = 256
    orientations_per_scale: tuple[int, ...] | None = None
    n_blocks: int = 4
    prefilter_fc: float = 4.0
    boundary_extension: int = 32

    def __post_init__(self):
        if self.image_size < 8:
            raise ValueError(f"Invalid GIST image_size {self.image_size}; expected at least 8 pixels.")
        if self.n_blocks < 1 or self.n_blocks > self.image_size:
            raise ValueError(f"Invalid GIST n_blocks {self.n_blocks}; expected 1..{self.image_size}.")
        if self.orientations_per_scale is not None and (
            not self.orientations_per_scale or min(self.orientations_per_scale) < 1
        ):
            raise ValueError(
                f"Invalid GIST orientations per scale {self.orientations_per_scale}; expected positive counts."
            )
        if not 0 <= self.boundary_extension <= self.image_size:
            raise ValueError(f"Invalid GIST boundary_extension {self.boundary_extension}; expected 0..{self.image_size}.")

    @property
    def orientations(self) -> tuple[int, ...]:
        if self.orientations_per_scale is not None:
            return tuple(self.orientations_per_scale)
        return COLOUR_ORIENTATIONS if self.colour else GREY_ORIENTATIONS

    @property
    def dimension(self) -> int:
        channels = 3 if self.colour else 1
        return channels * sum(self.orientations) * self.n_blocks**2


def gabor_transfer_functions(orientations_per_scale: tuple[int, ...], size: int) -> np.ndarray:
    """Build LMgist's Gabor transfer functions for a size x size image (createGabor).

    Filter (scale i, orientation j) is a Gaussian in log-polar frequency, centred at
    radius 0.3 / 1.85^i of the image size (cycles per pixel) and at angle -pi j / n_i:

        G = exp(-10 * 0.35 * (r / size / (0.3 / 1.85^i) - 1)^2 - 2 * (16 n_i^2 / 32^2) * pi * dtheta^2)

    Returns:
      float32 (n_filters, size, size), unshifted (DC at [0, 0]), scales in order.
    """
    coordinates = np.arange(size, dtype=np.float64) - size // 2
    fx, fy = np.meshgrid(coordinates, coordinates)
    radius = np.fft.fftshift(np.sqrt(fx**2 + fy**2))
    angle = np.fft.fftshift(np.arctan2(fy, fx))

    filters = []
    for scale, n_orientations in enumerate(orientations_per_scale):
        centre = 0.3 / 1.85**scale
        angular_width = 16.0 * n_orientations**2 / 32.0**2
        for orientation in range(n_orientations):
            rotated = angle + np.pi / n_orientations * orientation
            rotated = rotated + 2 * np.pi * (rotated < -np.pi) - 2 * np.pi * (rotated > np.pi)
            filters.append(
                np.exp(-10.0 * 0.35 * (radius / size / centre - 1.0) ** 2 - 2.0 * angular_width * np.pi * rotated**2)
            )
    return np.stack(filters).astype(np.float32)


def resize_and_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Resize (bilinear) so that the image covers size x size, then crop the centre (imresizecrop).

    Args:
      image: float32 (H, W, C).

    Returns:
      float32 (size, size, C).
    """
    height, width = image.shape[:2]
    scaling = max(size / height, size / width)
    new_height, new_width = max(size, round(height * scaling)), max(size, round(width * scaling))
    # NOTE: Pillow's bilinear filter widens its support when downscaling, like MATLAB's
    # imresize with antialiasing; values differ from MATLAB by small interpolation details.
    channels = [
        np.asarray(
            Image.fromarray(np.ascontiguousarray(image[..., channel]), mode="F").resize(
                (new_width, new_height), Image.Resampling.BILINEAR
            ),
            dtype=np.float32,
        )
        for channel in range(image.shape[2])
    ]
    resized = np.stack(channels, axis=-1)
    top = (new_height - size) // 2
    left = (new_width - size) // 2
    return resized[top : top + size, left : left + size]


def prefilter(image: np.ndarray, fc: float) -> np.ndarray:
    """Whiten and normalise local contrast (LMgist prefilt).

    Args:
      image: float (H, W, C), 0..255.
      fc: cut-off in cycles per image.

    Returns:
      float64 (H, W, C). With several channels, one local contrast (from the channel
      mean) divides all of them.
    """
    padding = PREFILTER_PADDING
    sigma = fc / np.sqrt(np.log(2.0))
    logged = np.log(np.asarray(image, dtype=np.float64) + 1.0)
    padded = np.pad(logged, ((padding, padding), (padding, padding), (0, 0)), mode="symmetric")
    padded_height, padded_width = padded.shape[:2]
    side = max(padded_height, padded_width)
    side += side % 2
    padded = np.pad(padded, ((0, side - padded_height), (0, side - padded_width), (0, 0)), mode="symmetric")

    coordinates = np.arange(-side // 2, side // 2, dtype=np.float64)
    fx, fy = np.meshgrid(coordinates, coordinates)
    gaussian = np.fft.fftshift(np.exp(-(fx**2 + fy**2) / sigma**2))[:, :, None]

    whitened = padded - np.real(np.fft.ifft2(np.fft.fft2(padded, axes=(0, 1)) * gaussian, axes=(0, 1)))
    energy = np.fft.fft2(whitened.mean(axis=2) ** 2) * gaussian[:, :, 0]
    local_std = np.sqrt(np.abs(np.fft.ifft2(energy)))[:, :, None]
    normalised = whitened / (LOCAL_CONTRAST_OFFSET + local_std)
    return normalised[padding : padded_height - padding, padding : padded_width - padding]


def block_means(responses: np.ndarray, n_blocks: int) -> np.ndarray:
    """Average (..., H, W) over an n_blocks x n_blocks grid; returns (..., n_blocks * n_blocks) column-major."""
    height, width = responses.shape[-2:]
    row_edges = np.fix(np.linspace(0, height, n_blocks + 1)).astype(int)
    column_edges = np.fix(np.linspace(0, width, n_blocks + 1)).astype(int)
    means = np.empty(responses.shape[:-2] + (n_blocks, n_blocks), dtype=np.float64)
    for row in range(n_blocks):
        for column in range(n_blocks):
            block = responses[..., row_edges[row] : row_edges[row + 1], column_edges[column] : column_edges[column + 1]]
            means[..., row, column] = block.mean(axis=(-2, -1))
    # Column-major block order: block row + n_blocks * block column.
    return np.swapaxes(means, -2, -1).reshape(responses.shape[:-2] + (n_blocks * n_blocks,))


class GistExtractor:
    """Computes GIST descriptors; builds the Gabor transfer functions once per configuration."""

    def __init__(self, config: GistConfig = GistConfig()):
        self.config = config
        padded_size = config.image_size + 2 * config.boundary_extension
        self._filters = gabor_transfer_functions(config.orientations, padded_size)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        """Compute the GIST of an image.

        Args:
          image: uint8 RGB (H, W, 3).

        Returns:
          float32 (config.dimension,), 512 for grey and 960 for colour with the defaults.
          A constant image gives all zeros.
        """
        images.check_uint8_image(image, "image for GIST")
        config = self.config
        pixels = image.astype(np.float32)
        if not config.colour:
            pixels = pixels.mean(axis=2, keepdims=True)
        pixels = resize_and_crop(pixels, config.image_size)
        if not config.colour:
            # LMgist stretches the grey image to 0..255; a constant image stays at 0 (MATLAB would give NaN).
            pixels = pixels - pixels.min()
            peak = pixels.max()
            pixels = pixels * (255.0 / peak) if peak > 0 else np.zeros_like(pixels)
        filtered = prefilter(np.maximum(pixels, 0.0), config.prefilter_fc)

        # Gabor energies in single precision, as LMgist's gistGabor computes them.
        border = config.boundary_extension
        padded = np.pad(filtered, ((border, border), (border, border), (0, 0)), mode="symmetric").astype(np.float32)
        spectrum = np.fft.fft2(np.moveaxis(padded, 2, 0))  # (C, N, N)
        size = config.image_size
        features = []
        for channel_spectrum in spectrum:
            responses = np.abs(np.fft.ifft2(channel_spectrum[None] * self._filters))  # (n_filters, N, N)
            responses = responses[:, border : border + size, border : border + size]
            features.append(block_means(responses, config.n_blocks).reshape(-1))
        return np.concatenate(features).astype(np.float32)


def gist_descriptor(image: np.ndarray, config: GistConfig = GistConfig()) -> np.ndarray:
    """Compute the GIST of one image (see `GistExtractor`); float32 (config.dimension,)."""
    return GistExtractor(config)(image)
