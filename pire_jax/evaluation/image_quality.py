"""How much a modified query differs from the original: SSIM, PSNR and L-infinity, on uint8 images."""

import math

import numpy as np
from skimage import metrics

# Wang, Bovik, Sheikh, Simoncelli, "Image quality assessment: from error visibility to
# structural similarity", IEEE TIP 2004: 11x11 Gaussian window with sigma 1.5,
# K1 = 0.01, K2 = 0.03, for 8-bit images (dynamic range 255).
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
DATA_RANGE = 255.0


def _check_pair(original: np.ndarray, modified: np.ndarray) -> None:
    for what, image in (("original", original), ("modified", modified)):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"Invalid {what} image: expected uint8 (H, W, 3), got {image.dtype} {image.shape}.")
    if original.shape != modified.shape:
        raise ValueError(f"Image shapes differ: original {original.shape}, modified {modified.shape}.")


def ssim(original: np.ndarray, modified: np.ndarray) -> float:
    """Compute the mean structural similarity of two uint8 RGB images.

    SSIM is computed per channel with the Wang et al. (2004) settings above (population
    statistics, the border where the window does not fit left out) and averaged over
    R, G and B.

    Args:
      original: uint8 (H, W, 3).
      modified: uint8 (H, W, 3), same shape.

    Returns:
      SSIM in [-1, 1]; 1 for identical images.
    """
    _check_pair(original, modified)
    if min(original.shape[:2]) < 11:
        raise ValueError(f"Image of shape {original.shape} is smaller than the 11x11 SSIM window.")
    return float(
        metrics.structural_similarity(
            original,
            modified,
            gaussian_weights=True,
            sigma=SSIM_SIGMA,
            use_sample_covariance=False,
            K1=SSIM_K1,
            K2=SSIM_K2,
            data_range=DATA_RANGE,
            channel_axis=-1,
        )
    )


def psnr(original: np.ndarray, modified: np.ndarray) -> float:
    """Compute the peak signal-to-noise ratio in dB (infinity for identical images)."""
    _check_pair(original, modified)
    mse = np.mean((original.astype(np.float64) - modified.astype(np.float64)) ** 2)
    if mse == 0:
        return math.inf
    return float(10.0 * np.log10(DATA_RANGE**2 / mse))


def linf_grey_levels(original: np.ndarray, modified: np.ndarray) -> int:
    """Return the largest absolute change of any channel of any pixel, in grey levels."""
    _check_pair(original, modified)
    return int(np.abs(original.astype(np.int16) - modified.astype(np.int16)).max())
