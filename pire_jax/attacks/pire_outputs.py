"""Turning a PIRE perturbation into an 8-bit adversarial image.

PIRE's budget (about 2.3 grey levels) is so small that most of v would vanish when
the image is rounded to 8 bits, so the perturbation is magnified before saving. Three
rules are offered, all applied to an RGB uint8 query and a perturbation in grey
levels, and all ending with a clip to 0..255 and rounding to uint8, which is what any
measurement must see:

  * "times10": x + 10 v, the output of Algorithm 1 of Liu et al. (2019).
  * "refined": x + p(v) with the released code's p(v) = ceil(|v| * 256) * sign(v) * 0.032
    in ImageNet-normalised units, expressed in grey levels through the ImageNet std
    (so every changed value moves by multiples of about 1.9 grey levels).
  * "minimal" (ours): the smallest change that survives rounding without flipping the
    sign of v: sign(v) * max(1, round(|v|)) grey levels where v != 0.
"""

import numpy as np

from pire_jax import images as images_lib
from pire_jax.models.input_convention import IMAGENET_STD_RGB

OUTPUT_RULES = ("times10", "refined", "minimal")

TIMES10_FACTOR = 10.0  # Liu et al. 2019, Algorithm 1: output x + 10 v.
REFINED_LEVELS = 256.0  # Released code: p(v) = ceil(|v| * 256) * sign(v) * 0.032.
REFINED_STEP_NORMALISED = 0.032


def refined_perturbation(perturbation_grey_levels: np.ndarray) -> np.ndarray:
    """Apply the released code's p(v), in grey levels (RGB, last axis = channel)."""
    grey_levels_per_unit = 255.0 * np.asarray(IMAGENET_STD_RGB, np.float64)
    normalised = perturbation_grey_levels.astype(np.float64) / grey_levels_per_unit
    refined = np.ceil(np.abs(normalised) * REFINED_LEVELS) * np.sign(normalised) * REFINED_STEP_NORMALISED
    return refined * grey_levels_per_unit


def minimal_perturbation(perturbation_grey_levels: np.ndarray) -> np.ndarray:
    """Return sign(v) * max(1, round(|v|)) where v != 0, else 0 (grey levels)."""
    magnitude = np.maximum(1.0, np.rint(np.abs(perturbation_grey_levels.astype(np.float64))))
    return np.where(perturbation_grey_levels != 0, np.sign(perturbation_grey_levels) * magnitude, 0.0)


def output_perturbation(perturbation_grey_levels: np.ndarray, rule: str) -> np.ndarray:
    """Return the change each output rule adds to the clean image, in grey levels (float64)."""
    if rule == "times10":
        return TIMES10_FACTOR * perturbation_grey_levels.astype(np.float64)
    if rule == "refined":
        return refined_perturbation(perturbation_grey_levels)
    if rule == "minimal":
        return minimal_perturbation(perturbation_grey_levels)
    raise ValueError(f"Invalid output rule {rule!r}; expected one of {OUTPUT_RULES}.")


def adversarial_image(image: np.ndarray, perturbation_grey_levels: np.ndarray, rule: str) -> np.ndarray:
    """Build the 8-bit adversarial query.

    Args:
      image: uint8 (H, W, 3), the clean query that was attacked.
      perturbation_grey_levels: float (H, W, 3), PIRE's v in RGB grey levels.
      rule: one of OUTPUT_RULES.

    Returns:
      uint8 (H, W, 3): clip(round(image + output_perturbation(v))).
    """
    images_lib.check_uint8_image(image, "clean query")
    if perturbation_grey_levels.shape != image.shape:
        raise ValueError(f"Perturbation shape {perturbation_grey_levels.shape} does not match image shape {image.shape}.")
    return images_lib.quantize_to_uint8(image.astype(np.float64) + output_perturbation(perturbation_grey_levels, rule))
