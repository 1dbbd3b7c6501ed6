"""One entry point for the query modifications that compete with PIRE: keypoint attacks and Gaussian noise.

`apply_query_modification(name, image, config, seed)` takes a uint8 RGB query and
returns the modified uint8 RGB query with a JSON-serialisable report, whatever the
modification. The keypoint attacks (Do et al. 2010, Li et al. 2017) work on the grey
image `pire_jax.images.rgb_to_grey` and get their colour back with
`pire_jax.attacks.colour_recovery`. The report counts the SIFT keypoints (OpenCV,
`scale_space.SiftParameters`) of the query before and after.

Names: "rmd", "ls", "fmd", "rdg", "rmd+ls", "ls+fmd", "gaussian". PIRE is not here: it
needs a network and lives in `pire_jax.attacks.pire`.
"""

import dataclasses
import math
import time
from typing import Any, Callable

import numpy as np
from absl import logging

from pire_jax import images
from pire_jax.attacks import colour_recovery, gaussian_noise
from pire_jax.attacks.keypoints import (
    combined,
    fmd,
    keypoint_sets,
    local_smoothing,
    rdg,
    rmd,
    scale_space,
    working_image,
)
from pire_jax.evaluation import psnr, ssim


def _run_rmd(grey, originals, targeted, config, rng):
    del rng  # RMD is deterministic once the targets are chosen.
    return rmd.remove_keypoints_rmd(grey, grey, originals, targeted, config)


def _run_ls(grey, originals, targeted, config, rng):
    del rng
    return local_smoothing.remove_keypoints_ls(grey, grey, originals, targeted, config)


def _run_fmd(grey, originals, targeted, config, rng):
    del targeted  # FMD adds keypoints and removes none.
    return fmd.forge_keypoints_fmd(grey, grey, originals, config, rng)


def _run_rdg(grey, originals, targeted, config, rng):
    del rng
    return rdg.remove_keypoints_rdg(grey, grey, originals, targeted, config)


def _run_rmd_ls(grey, originals, targeted, config, rng):
    del rng
    return combined.remove_keypoints_rmd_ls(grey, grey, originals, targeted, config)


def _run_ls_fmd(grey, originals, targeted, config, rng):
    return combined.remove_and_forge_ls_fmd(grey, grey, originals, targeted, config, rng)


@dataclasses.dataclass(frozen=True)
class _KeypointAttack:
    config_type: type
    run: Callable


_KEYPOINT_ATTACKS = {
    "rmd": _KeypointAttack(rmd.RmdConfig, _run_rmd),
    "ls": _KeypointAttack(local_smoothing.LocalSmoothingConfig, _run_ls),
    "fmd": _KeypointAttack(fmd.FmdConfig, _run_fmd),
    "rdg": _KeypointAttack(rdg.RdgConfig, _run_rdg),
    "rmd+ls": _KeypointAttack(combined.RmdLsConfig, _run_rmd_ls),
    "ls+fmd": _KeypointAttack(combined.LsFmdConfig, _run_ls_fmd),
}
GAUSSIAN = "gaussian"
QUERY_MODIFICATIONS = tuple(_KEYPOINT_ATTACKS) + (GAUSSIAN,)


def default_config(name: str):
    """Return the default settings of a query modification."""
    _check_name(name)
    if name == GAUSSIAN:
        return gaussian_noise.GaussianNoiseConfig()
    return _KEYPOINT_ATTACKS[name].config_type()


def make_config(name: str, overrides: dict[str, Any] | None = None):
    """Build settings from the defaults and a (nested) dict of overrides, e.g. from JSON.

    A field whose default is itself a settings dataclass (the stages of a combined
    attack, the SIFT parameters) takes a nested dict.
    """
    return _replace(default_config(name), overrides or {}, name)


def _replace(config, overrides: dict[str, Any], where: str):
    names = {field.name for field in dataclasses.fields(config)}
    changes = {}
    for key, value in overrides.items():
        if key not in names:
            raise ValueError(f"Unknown setting {key!r} for {where}; expected one of {sorted(names)}.")
        current = getattr(config, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            value = _replace(current, value, f"{where}.{key}")
        changes[key] = value
    return dataclasses.replace(config, **changes)


def _check_name(name: str) -> None:
    if name not in QUERY_MODIFICATIONS:
        raise ValueError(f"Unknown query modification {name!r}; expected one of {QUERY_MODIFICATIONS}.")


def _sift_parameters(config) -> scale_space.SiftParameters:
    """Return the detector settings of a keypoint attack (the first stage's for combined attacks)."""
    if hasattr(config, "sift"):
        return config.sift
    for field in dataclasses.fields(config):
        stage = getattr(config, field.name)
        if dataclasses.is_dataclass(stage) and hasattr(stage, "sift"):
            return stage.sift
    return scale_space.DEFAULT_PARAMETERS


def keypoint_report(
    original_rgb: np.ndarray, modified_rgb: np.ndarray, parameters: scale_space.SiftParameters
) -> dict[str, Any]:
    """Count SIFT keypoint locations of a query before and after a modification.

    Returns:
      dict with "keypoints_before", "keypoints_after", "remaining" (original keypoints
      still detected, same position and scale within `keypoint_sets` tolerances),
      "removed" (original keypoints no longer detected), "removed_fraction" and
      "forged" (detected keypoints that match no original one).
    """
    before = working_image.detect_unique(images.rgb_to_grey(original_rgb), parameters)
    after = working_image.detect_unique(images.rgb_to_grey(modified_rgb), parameters)
    survives, match = keypoint_sets.match_locations(before, after)
    return {
        "keypoints_before": len(before),
        "keypoints_after": len(after),
        "remaining": int(survives.sum()),
        "removed": int((~survives).sum()),
        "removed_fraction": float((~survives).sum() / max(len(before), 1)),
        "forged": int((match < 0).sum()),
    }


def apply_query_modification(
    name: str, image: np.ndarray, config=None, seed: int = 0
) -> tuple[np.ndarray, dict[str, Any]]:
    """Apply a keypoint attack or the Gaussian-noise baseline to a query image.

    Args:
      name: one of QUERY_MODIFICATIONS.
      image: uint8 RGB query (H, W, 3).
      config: None for the defaults, the modification's settings dataclass, or a dict
        of overrides (see `make_config`).
      seed: seed of every random choice (targeted subset, forging sites, noise); the
        same seed gives the same output.

    Returns:
      (modified uint8 RGB image of the same shape; JSON-serialisable report with the
      settings, keypoint counts (`keypoint_report`), PSNR and SSIM against the query,
      the largest channel change, per-stage details and the run time).
    """
    _check_name(name)
    images.check_uint8_image(image, "query image")
    if config is None or isinstance(config, dict):
        config = make_config(name, config)
    elif not isinstance(config, type(default_config(name))):
        raise ValueError(
            f"Invalid settings for {name!r}: got {type(config).__name__}, expected "
            f"{type(default_config(name)).__name__} or a dict of overrides."
        )
    start = time.perf_counter()
    logging.info("Query modification %s (seed %d) on a %dx%d image.", name, seed, image.shape[1], image.shape[0])

    if name == GAUSSIAN:
        modified, details = gaussian_noise.match_ssim(image, config, seed)
        parameters = scale_space.DEFAULT_PARAMETERS
        stage_report = {"gaussian": details}
    else:
        attack = _KEYPOINT_ATTACKS[name]
        parameters = _sift_parameters(config)
        grey = images.rgb_to_grey(image)
        originals = working_image.detect_unique(grey, parameters)
        target_rng, attack_rng = (np.random.default_rng(child) for child in np.random.SeedSequence(seed).spawn(2))
        targeted = working_image.select_targets(originals, getattr(config, "keypoint_fraction", 1.0), target_rng)
        modified_grey, details = attack.run(grey, originals, targeted, config, attack_rng)
        modified, recovery = colour_recovery.recover_colour(image, modified_grey)
        stage_report = {"attack": details, "colour_recovery": recovery, "targeted": int(targeted.sum())}

    report = {"modification": name, "seed": seed, "settings": dataclasses.asdict(config)}
    report.update(keypoint_report(image, modified, parameters))
    peak_snr = psnr(image, modified)
    report.update(
        {
            # JSON has no infinity: an unchanged image gets None.
            "psnr": peak_snr if math.isfinite(peak_snr) else None,
            "ssim": ssim(image, modified),
            "max_abs_change": int(np.abs(image.astype(np.int16) - modified.astype(np.int16)).max()),
            "seconds": time.perf_counter() - start,
        }
    )
    report.update(stage_report)
    logging.info(
        "Query modification %s done in %.1f s: %d of %d keypoints removed, %d forged, SSIM %.3f.",
        name,
        report["seconds"],
        report["removed"],
        report["keypoints_before"],
        report["forged"],
        report["ssim"],
    )
    return modified, report
