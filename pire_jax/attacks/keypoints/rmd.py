"""RMD: SIFT keypoint removal with minimum local distortion.

Do, Kijak, Furon and Amsaleg, "Understanding the security and robustness of SIFT",
ACM Multimedia 2010, and Do, Kijak, Amsaleg and Furon, "Deluding image recognition in
SIFT-based CBIR systems", ACM MiFor 2010. A keypoint exists because its DoG value is
an extremum above the contrast threshold. The DoG value is linear in the image, so the
smallest (L2) change that moves it from D to a target t is (t - D) k / ||k||^2, where k
is the DoG kernel of that position (`dog_kernels.DogLinearModel.dog_kernel`). The patch
is added for every targeted keypoint, the image is re-detected, and keypoints that
moved to a neighbouring extremum are attacked again, until none is left, the
iteration bound is reached, or the distortion bound stops further change.
"""

import dataclasses
import time

import numpy as np
from absl import logging

from pire_jax.attacks.keypoints import dog_kernels, scale_space, working_image


@dataclasses.dataclass(frozen=True)
class RmdConfig:
    """Settings of RMD.

    Attributes:
      max_iterations: rounds of detect-and-patch.
      max_abs_change: largest change of any pixel from the original grey image, grey levels.
      keypoint_fraction: share of the original keypoints attacked (chosen with the seed).
      residual_contrast: |DoG| aimed for at the keypoint, as a fraction of OpenCV's
        candidate threshold (half the contrast threshold, 1.7 grey levels by default).
        Below 1 the position stops being a candidate at all.
      sift: detector settings.
    """

    max_iterations: int = 8
    max_abs_change: float = 24.0
    keypoint_fraction: float = 1.0
    residual_contrast: float = 0.5
    sift: scale_space.SiftParameters = scale_space.DEFAULT_PARAMETERS

    def __post_init__(self):
        if self.max_iterations < 1:
            raise ValueError(f"Invalid max_iterations {self.max_iterations}: expected at least 1.")
        if not 0.0 <= self.residual_contrast < 2.0:
            raise ValueError(f"Invalid residual_contrast {self.residual_contrast}: expected a value in [0, 2).")


def remove_keypoints_rmd(
    grey_levels: np.ndarray,
    reference_grey: np.ndarray,
    originals: scale_space.Keypoints,
    targeted: np.ndarray,
    config: RmdConfig,
) -> tuple[np.ndarray, dict]:
    """Remove targeted SIFT keypoints with minimum-L2 DoG-kernel patches.

    Args:
      grey_levels: image to change (H, W), grey levels.
      reference_grey: unattacked grey image; `max_abs_change` is measured from it.
      originals: keypoints of the unattacked image (one per location).
      targeted: bool mask over `originals`, the keypoints to remove.
      config: RMD settings.

    Returns:
      (changed grey image, float32 (H, W), grey levels; details dict with
      "iterations", "patches" (patches added) and "seconds").
    """
    scale_space.check_grey_image(grey_levels)
    start = time.perf_counter()
    image = working_image.WorkingImage(grey_levels, reference_grey, config.max_abs_change)
    model = dog_kernels.linear_model_for(*image.shape, config.sift)
    target_level = config.residual_contrast * config.sift.candidate_threshold
    patches = 0
    iterations = 0

    while iterations < config.max_iterations:
        quantized = image.quantized()
        targets, _ = working_image.surviving_targets(quantized, originals, targeted, config.sift)
        logging.info("RMD iteration %d: %d targeted keypoints still detected.", iterations + 1, len(targets))
        if len(targets) == 0:
            break
        iterations += 1
        nodes = working_image.trace_keypoint_nodes(quantized, targets, config.sift)

        for index in range(len(nodes)):
            octave, layer = int(nodes.octave[index]), int(nodes.layer[index])
            row, col = int(nodes.row[index]), int(nodes.col[index])
            value = model.dog_values(image.values, octave, [layer], [row], [col])[0, 0, 0]
            goal = nodes.sign[index] * target_level
            if nodes.sign[index] * value <= target_level:
                continue
            row_start, col_start, kernel = model.dog_kernel(octave, layer, row, col)
            # Minimum-L2 change of one linear functional: (goal - value) * k / ||k||^2.
            image.add_patch(row_start, col_start, (goal - value) / np.sum(kernel**2) * kernel)
            patches += 1

    seconds = time.perf_counter() - start
    logging.info("RMD finished after %d iterations and %d patches in %.1f s.", iterations, patches, seconds)
    return image.values.astype(np.float32), {"iterations": iterations, "patches": patches, "seconds": seconds}
