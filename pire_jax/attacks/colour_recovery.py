"""Colour recovery: turn a modified grey image back into colour, keeping each pixel's hue.

The keypoint attacks change the grey image I_gray = 0.30 R + 0.59 G + 0.11 B
(`pire_jax.images.GREY_WEIGHTS`). Liu, Zhao and Larson (ICMR 2019) recover colour by
scaling R, G and B of every pixel by alpha = I_mod / I_gray, which gives exactly the
modified grey value and the original chromaticity. Three cases need a rule:
  * I_gray = 0 (a black pixel has no hue to keep): the pixel becomes grey, R = G = B = I_mod;
  * a channel would exceed 255: it is clipped to 255. The grey level lost by the
    clipping is put back by moving all channels towards white by the same fraction,
    which hits I_mod exactly and desaturates the pixel only as much as needed;
  * rounding to uint8: each channel is rounded down or up, choosing among the 8
    combinations the one whose grey value is closest to I_mod. The re-greyed image is
    then within 0.5 grey level of I_mod and usually within 0.1, where rounding each
    channel to nearest would allow errors up to 0.5 everywhere.
Pixels whose grey value the attack left unchanged keep their original colour exactly.
Because alpha multiplies, a channel can change by more than the grey value: raising
the grey level of a pure blue pixel by d raises its blue channel by d / 0.11.
"""

import itertools

import numpy as np

from pire_jax import images

_ROUNDING_CHOICES = np.array(list(itertools.product((0.0, 1.0), repeat=3)))  # (8, 3), 1 = round up


def recover_colour(original_rgb: np.ndarray, modified_grey: np.ndarray) -> tuple[np.ndarray, dict]:
    """Colour a modified grey image with the hues of the original colour image.

    Args:
      original_rgb: uint8 (H, W, 3), the unmodified image.
      modified_grey: (H, W) grey levels 0..255 (float or uint8), the attacked grey image;
        values outside 0..255 are clipped.

    Returns:
      (uint8 (H, W, 3) recovered image; report with "max_abs_grey_error" and
      "mean_abs_grey_error" (grey levels, |grey of the result - clipped modified grey|
      over all pixels), "changed_pixels", "black_pixels" (made grey) and
      "clipped_pixels" (a channel reached 255)).
    """
    images.check_uint8_image(original_rgb, "original image")
    if modified_grey.shape != original_rgb.shape[:2]:
        raise ValueError(
            f"Invalid modified grey image of shape {modified_grey.shape}; expected {original_rgb.shape[:2]} "
            "to match the original image."
        )
    weights = np.asarray(images.GREY_WEIGHTS, dtype=np.float64)
    original_grey = images.rgb_to_grey(original_rgb)
    changed = np.asarray(modified_grey, dtype=np.float32) != original_grey
    target = np.clip(np.asarray(modified_grey, dtype=np.float64), 0.0, 255.0)[changed]
    colours = original_rgb[changed].astype(np.float64)
    grey = colours @ weights

    # Scale by alpha = I_mod / I_gray; black pixels become grey.
    black = grey <= 0
    scaled = np.empty_like(colours)
    scaled[~black] = colours[~black] * (target[~black] / grey[~black])[:, None]
    scaled[black] = target[black][:, None]

    # A channel above 255: clip it and move towards white until the grey value is I_mod.
    clipped = np.any(scaled > 255.0, axis=1)
    capped = np.minimum(scaled[clipped], 255.0)
    missing = target[clipped] - capped @ weights
    room = (255.0 - capped) @ weights
    fraction = np.divide(missing, room, out=np.zeros_like(missing), where=room > 0)
    scaled[clipped] = capped + np.clip(fraction, 0.0, 1.0)[:, None] * (255.0 - capped)

    # Round each channel down or up, whichever of the 8 combinations is closest in grey
    # value. The distance to plain rounding (weighted 1e-6) only breaks near-ties.
    lower = np.floor(scaled)
    options = np.clip(lower[:, None, :] + _ROUNDING_CHOICES[None, :, :], 0.0, 255.0)
    grey_error = np.abs(options @ weights - target[:, None])
    rounding_distance = np.sum((options - scaled[:, None, :]) ** 2, axis=2)
    order = np.argmin(grey_error + 1e-6 * rounding_distance, axis=1)
    rounded = options[np.arange(len(options)), order]

    recovered = original_rgb.copy()
    recovered[changed] = rounded.astype(np.uint8)

    all_target = np.clip(np.asarray(modified_grey, dtype=np.float64), 0.0, 255.0)
    error = np.abs(recovered.astype(np.float64) @ weights - all_target)
    report = {
        "max_abs_grey_error": float(error.max()),
        "mean_abs_grey_error": float(error.mean()),
        "changed_pixels": int(changed.sum()),
        "black_pixels": int(black.sum()),
        "clipped_pixels": int(clipped.sum()),
    }
    return recovered, report
