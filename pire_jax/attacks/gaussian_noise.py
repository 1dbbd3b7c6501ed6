"""Gaussian-noise baseline: random noise as visible as an attack, measured by SSIM.

Liu, Zhao and Larson (ICMR 2019) compare PIRE with i.i.d. Gaussian noise whose strength
gives the same SSIM as the PIRE queries, to show that PIRE's effect is not that of any
perturbation of that size. Here the noise is drawn once from the seed (one standard
normal value per channel of every pixel), scaled by sigma in grey levels, added to the
uint8 image and rounded and clipped back to uint8. Sigma is found by bisection so that
the SSIM against the original (`pire_jax.evaluation.ssim`) matches the target. This
works because, with the noise fixed, SSIM decreases with sigma apart from rounding steps.
"""

import dataclasses

import numpy as np
from absl import logging

from pire_jax import images
from pire_jax.evaluation import ssim


@dataclasses.dataclass(frozen=True)
class GaussianNoiseConfig:
    """Settings of the Gaussian-noise baseline.

    Attributes:
      target_ssim: SSIM to match, in (0, 1); e.g. that of the PIRE queries it is
        compared with (0.687 for Oxford WI at T = 500 in Liu et al. 2019).
      tolerance: accepted |SSIM - target_ssim|.
      max_steps: bisection steps before the closest sigma found is returned.
      max_sigma: largest sigma tried, grey levels.
    """

    target_ssim: float | None = None
    tolerance: float = 0.002
    max_steps: int = 30
    max_sigma: float = 255.0

    def __post_init__(self):
        if self.target_ssim is not None and not 0.0 < self.target_ssim < 1.0:
            raise ValueError(f"Invalid target_ssim {self.target_ssim}: expected a value in (0, 1).")
        if not self.tolerance > 0:
            raise ValueError(f"Invalid tolerance {self.tolerance}: expected a positive SSIM difference.")
        if self.max_steps < 1:
            raise ValueError(f"Invalid max_steps {self.max_steps}: expected at least 1.")


def add_gaussian_noise(image: np.ndarray, sigma: float, noise: np.ndarray) -> np.ndarray:
    """Return uint8(round(clip(image + sigma * noise))).

    Args:
      image: uint8 (H, W, 3).
      sigma: noise standard deviation, grey levels.
      noise: float array of image's shape, standard normal values.
    """
    return images.quantize_to_uint8(image.astype(np.float64) + sigma * noise)


def match_ssim(image: np.ndarray, config: GaussianNoiseConfig, seed: int) -> tuple[np.ndarray, dict]:
    """Add Gaussian noise whose SSIM against the image matches `config.target_ssim`.

    Args:
      image: uint8 (H, W, 3).
      config: settings; target_ssim must be set.
      seed: seed of the noise.

    Returns:
      (noisy uint8 (H, W, 3); report with "sigma" (grey levels), "ssim", "target_ssim",
      "steps" and "reached" (|ssim - target| <= tolerance)).
    """
    images.check_uint8_image(image)
    if config.target_ssim is None:
        raise ValueError(
            "The Gaussian-noise baseline needs target_ssim, the SSIM to match (for example the mean "
            "SSIM of the PIRE queries it is compared with)."
        )
    noise = np.random.default_rng(seed).standard_normal(image.shape)

    low, high = 0.0, config.max_sigma
    best = (np.inf, 0.0, image, 1.0)
    steps = 0
    for steps in range(1, config.max_steps + 1):
        sigma = 0.5 * (low + high)
        noisy = add_gaussian_noise(image, sigma, noise)
        achieved = ssim(image, noisy)
        gap = abs(achieved - config.target_ssim)
        if gap < best[0]:
            best = (gap, sigma, noisy, achieved)
        if gap <= config.tolerance:
            break
        if achieved > config.target_ssim:
            low = sigma
        else:
            high = sigma

    gap, sigma, noisy, achieved = best
    reached = bool(gap <= config.tolerance)
    if not reached:
        logging.warning(
            "Gaussian noise: SSIM %.4f is the closest to the target %.4f after %d steps (sigma %.3f).",
            achieved,
            config.target_ssim,
            steps,
            sigma,
        )
    report = {
        "sigma": float(sigma),
        "ssim": float(achieved),
        "target_ssim": float(config.target_ssim),
        "steps": steps,
        "reached": reached,
    }
    return noisy, report
