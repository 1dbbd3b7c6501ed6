"""LS: SIFT keypoint removal by local smoothing.

Do, Kijak, Furon and Amsaleg, "Understanding the security and robustness of SIFT",
ACM Multimedia 2010. A keypoint is a blob-like DoG extremum at scale sigma. Blurring
its support region with a Gaussian of about that scale flattens the blob, so the
extremum falls under the contrast threshold. Only pixels closer than
`support_radius * sigma` to a targeted keypoint change, with a weight that is 1 on the
inner half of that disc and falls smoothly (raised cosine) to 0 at its edge. Keypoints
that survive a round are blurred `escalation` times more strongly in the next one.

Units: keypoint sigma is half the OpenCV keypoint size, in image pixels; radii and blur
sigmas are multiples of it.
"""

import dataclasses
import time

import cv2
import numpy as np
from absl import logging

from pire_jax.attacks.keypoints import scale_space, working_image

# Blur sigmas are rounded to a quarter-octave grid so that one blurred image serves
# many keypoints; 2^(1/8) is the largest relative rounding error.
_LEVELS_PER_OCTAVE = 4
_SMALLEST_BLUR = 0.5  # pixels


@dataclasses.dataclass(frozen=True)
class LocalSmoothingConfig:
    """Settings of LS.

    Attributes:
      max_iterations: rounds of detect-and-blur.
      max_abs_change: largest change of any pixel from the original grey image, grey levels.
      keypoint_fraction: share of the original keypoints attacked (chosen with the seed).
      support_radius: radius of the changed disc, in keypoint sigmas.
      blur_sigma: sigma of the Gaussian blur in the first round, in keypoint sigmas.
      escalation: factor applied to the blur of a keypoint each time it survives a round.
      sift: detector settings.
    """

    max_iterations: int = 3
    max_abs_change: float = 64.0
    keypoint_fraction: float = 1.0
    support_radius: float = 1.5
    blur_sigma: float = 0.7
    escalation: float = 1.5
    sift: scale_space.SiftParameters = scale_space.DEFAULT_PARAMETERS

    def __post_init__(self):
        if self.max_iterations < 1:
            raise ValueError(f"Invalid max_iterations {self.max_iterations}: expected at least 1.")
        for name in ("support_radius", "blur_sigma"):
            if not getattr(self, name) > 0:
                raise ValueError(f"Invalid {name} {getattr(self, name)}: expected a positive multiple of sigma.")
        if not self.escalation >= 1:
            raise ValueError(f"Invalid escalation {self.escalation}: expected a factor >= 1.")


def support_weight(distance: np.ndarray, radius: float) -> np.ndarray:
    """Blend weight of a pixel at `distance` pixels from a keypoint whose support has `radius`.

    1 up to radius / 2, raised cosine down to 0 at `radius`, 0 beyond.
    """
    half = radius / 2.0
    ramp = 0.5 * (1.0 + np.cos(np.pi * np.clip((distance - half) / half, 0.0, 1.0)))
    return np.where(distance < radius, ramp, 0.0)


def _blur_level(blur_sigmas: np.ndarray) -> np.ndarray:
    """Index of the quarter-octave grid level nearest to each blur sigma."""
    return np.rint(_LEVELS_PER_OCTAVE * np.log2(np.maximum(blur_sigmas, _SMALLEST_BLUR) / _SMALLEST_BLUR)).astype(
        np.int64
    )


def _smooth_round(
    image: working_image.WorkingImage, x: np.ndarray, y: np.ndarray, radii: np.ndarray, blur_sigmas: np.ndarray
) -> None:
    """Blend a blurred copy into the discs around keypoints, weakest blur first."""
    rows, cols = image.shape
    levels = _blur_level(blur_sigmas)
    for level in np.unique(levels):
        sigma = _SMALLEST_BLUR * 2.0 ** (level / _LEVELS_PER_OCTAVE)
        members = np.nonzero(levels == level)[0]
        top = max(int(np.floor((y[members] - radii[members]).min())), 0)
        bottom = min(int(np.ceil((y[members] + radii[members]).max())) + 1, rows)
        left = max(int(np.floor((x[members] - radii[members]).min())), 0)
        right = min(int(np.ceil((x[members] + radii[members]).max())) + 1, cols)
        weight = np.zeros((bottom - top, right - left))
        for index in members:
            box_top = max(int(np.floor(y[index] - radii[index])), top)
            box_bottom = min(int(np.ceil(y[index] + radii[index])) + 1, bottom)
            box_left = max(int(np.floor(x[index] - radii[index])), left)
            box_right = min(int(np.ceil(x[index] + radii[index])) + 1, right)
            grid_y, grid_x = np.mgrid[box_top:box_bottom, box_left:box_right]
            disc = support_weight(np.hypot(grid_x - x[index], grid_y - y[index]), radii[index])
            window = weight[box_top - top : box_bottom - top, box_left - left : box_right - left]
            np.maximum(window, disc, out=window)

        # Blur with enough context around the discs that the border rule does not matter.
        margin = int(np.ceil(4 * sigma)) + 1
        context_top, context_bottom = max(top - margin, 0), min(bottom + margin, rows)
        context_left, context_right = max(left - margin, 0), min(right + margin, cols)
        context = image.values[context_top:context_bottom, context_left:context_right].astype(np.float32)
        blurred = cv2.GaussianBlur(context, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101).astype(np.float64)
        blurred = blurred[top - context_top : bottom - context_top, left - context_left : right - context_left]
        current = image.values[top:bottom, left:right]
        changed = weight > 0
        change = np.zeros_like(weight)
        change[changed] = weight[changed] * (blurred[changed] - current[changed])
        image.add_patch(top, left, change)


def remove_keypoints_ls(
    grey_levels: np.ndarray,
    reference_grey: np.ndarray,
    originals: scale_space.Keypoints,
    targeted: np.ndarray,
    config: LocalSmoothingConfig,
) -> tuple[np.ndarray, dict]:
    """Remove targeted SIFT keypoints by blurring their support regions.

    Args:
      grey_levels: image to change (H, W), grey levels.
      reference_grey: unattacked grey image; `max_abs_change` is measured from it.
      originals: keypoints of the unattacked image (one per location).
      targeted: bool mask over `originals`, the keypoints to remove.
      config: LS settings.

    Returns:
      (changed grey image, float32 (H, W), grey levels; details dict with
      "iterations", "smoothed" (discs blended over all rounds) and "seconds").
    """
    scale_space.check_grey_image(grey_levels)
    start = time.perf_counter()
    image = working_image.WorkingImage(grey_levels, reference_grey, config.max_abs_change)
    strength = np.ones(len(originals))
    smoothed = 0
    iterations = 0

    while iterations < config.max_iterations:
        targets, matched = working_image.surviving_targets(image.quantized(), originals, targeted, config.sift)
        logging.info("LS iteration %d: %d targeted keypoints still detected.", iterations + 1, len(targets))
        if len(targets) == 0:
            break
        iterations += 1
        sigma = targets.size / 2.0
        _smooth_round(
            image, targets.x, targets.y, config.support_radius * sigma, config.blur_sigma * strength[matched] * sigma
        )
        strength[np.unique(matched)] *= config.escalation
        smoothed += len(targets)

    seconds = time.perf_counter() - start
    logging.info("LS finished after %d iterations and %d smoothed discs in %.1f s.", iterations, smoothed, seconds)
    return image.values.astype(np.float32), {"iterations": iterations, "smoothed": smoothed, "seconds": seconds}
