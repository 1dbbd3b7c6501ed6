"""The combined keypoint attacks RMD+LS and LS+FMD.

Liu, Zhao and Larson (ICMR 2019, Table 6) evaluate the combinations of Do et al.
(2010): RMD+LS removes keypoints with RMD and then smooths the targeted keypoints that
RMD left; LS+FMD removes keypoints with LS and then forges as many new keypoints as LS
removed, so that the keypoint count of the query looks unchanged. Both stages work on
the same grey image and measure their distortion bound from the unattacked query.
"""

import dataclasses
import time

import numpy as np

from pire_jax.attacks.keypoints import keypoint_sets, scale_space, working_image
from pire_jax.attacks.keypoints.fmd import FmdConfig, forge_keypoints_fmd
from pire_jax.attacks.keypoints.local_smoothing import LocalSmoothingConfig, remove_keypoints_ls
from pire_jax.attacks.keypoints.rmd import RmdConfig, remove_keypoints_rmd


@dataclasses.dataclass(frozen=True)
class RmdLsConfig:
    """Settings of RMD followed by LS.

    Attributes:
      rmd: RMD settings.
      ls: LS settings. LS smooths the targeted keypoints that RMD left.
      keypoint_fraction: share of the original keypoints attacked (chosen with the
        seed). It replaces the keypoint_fraction of both stages, which is not used.
    """

    rmd: RmdConfig = RmdConfig()
    ls: LocalSmoothingConfig = LocalSmoothingConfig()
    keypoint_fraction: float = 1.0


@dataclasses.dataclass(frozen=True)
class LsFmdConfig:
    """Settings of LS followed by FMD.

    Attributes:
      ls: LS settings.
      fmd: FMD settings.
      forge_removed: forge as many keypoints as LS removed. When False, FMD forges
        `fmd.num_forged` or `fmd.forge_fraction` of the original count.
      keypoint_fraction: share of the original keypoints attacked by LS (chosen with
        the seed). It replaces the keypoint_fraction of the LS stage, which is not used.
    """

    ls: LocalSmoothingConfig = LocalSmoothingConfig()
    fmd: FmdConfig = FmdConfig()
    forge_removed: bool = True
    keypoint_fraction: float = 1.0


def remove_keypoints_rmd_ls(
    grey_levels: np.ndarray,
    reference_grey: np.ndarray,
    originals: scale_space.Keypoints,
    targeted: np.ndarray,
    config: RmdLsConfig,
) -> tuple[np.ndarray, dict]:
    """Run RMD, then LS on the targeted keypoints that survived it.

    Returns:
      (changed grey image, float32 (H, W), grey levels; details with one entry per stage).
    """
    start = time.perf_counter()
    after_rmd, rmd_details = remove_keypoints_rmd(grey_levels, reference_grey, originals, targeted, config.rmd)
    after_ls, ls_details = remove_keypoints_ls(after_rmd, reference_grey, originals, targeted, config.ls)
    return after_ls, {"rmd": rmd_details, "ls": ls_details, "seconds": time.perf_counter() - start}


def remove_and_forge_ls_fmd(
    grey_levels: np.ndarray,
    reference_grey: np.ndarray,
    originals: scale_space.Keypoints,
    targeted: np.ndarray,
    config: LsFmdConfig,
    rng: np.random.Generator,
) -> tuple[np.ndarray, dict]:
    """Run LS, then FMD with as many sites as LS removed keypoints (when forge_removed).

    Returns:
      (changed grey image, float32 (H, W), grey levels; details with one entry per
      stage and "removed_by_ls").
    """
    start = time.perf_counter()
    after_ls, ls_details = remove_keypoints_ls(grey_levels, reference_grey, originals, targeted, config.ls)
    removed = None
    if config.forge_removed:
        survivors, _ = keypoint_sets.match_locations(originals, working_image.detect_unique(after_ls, config.ls.sift))
        removed = int(np.sum(targeted & ~survivors))
    after_fmd, fmd_details = forge_keypoints_fmd(after_ls, reference_grey, originals, config.fmd, rng, removed)
    details = {"ls": ls_details, "fmd": fmd_details, "removed_by_ls": removed, "seconds": time.perf_counter() - start}
    return after_fmd, details
