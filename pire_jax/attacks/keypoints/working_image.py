"""State shared by the iterative keypoint attacks: the grey image under change, its bounds, and re-detection.

Every attack repeats: quantize the working image to uint8, detect SIFT keypoints with
OpenCV, find the detected keypoints that are still attack targets, change pixels,
clip to the distortion bound. The working image stays in float64 grey levels between
iterations so that changes smaller than one grey level accumulate instead of being
rounded away. Detection always runs on the uint8 image that will be saved.
"""

import dataclasses

import numpy as np

from pire_jax import images
from pire_jax.attacks.keypoints import keypoint_sets, scale_space


class WorkingImage:
    """A float64 grey image whose changes stay within `max_abs_change` grey levels of a reference.

    Pixels that an earlier stage of a combined attack already moved further than the
    bound keep their value as the limit on that side, so a later stage never undoes
    an earlier one.

    Args:
      grey_levels: starting image (H, W), grey levels 0..255.
      reference_grey: image the bound is measured from (the unattacked query), same shape.
      max_abs_change: largest allowed |change| of a pixel, grey levels.
    """

    def __init__(self, grey_levels: np.ndarray, reference_grey: np.ndarray, max_abs_change: float):
        if grey_levels.shape != reference_grey.shape:
            raise ValueError(f"Image shapes differ: {grey_levels.shape} and reference {reference_grey.shape}.")
        if not max_abs_change > 0:
            raise ValueError(f"Invalid max_abs_change {max_abs_change}: expected a positive number of grey levels.")
        reference = np.asarray(reference_grey, dtype=np.float64)
        self.values = np.clip(np.asarray(grey_levels, dtype=np.float64), 0.0, 255.0)
        self.lower = np.minimum(np.maximum(reference - max_abs_change, 0.0), self.values)
        self.upper = np.maximum(np.minimum(reference + max_abs_change, 255.0), self.values)

    @property
    def shape(self) -> tuple[int, int]:
        return self.values.shape

    def add_patch(self, row_start: int, col_start: int, patch: np.ndarray) -> None:
        """Add a patch whose top-left pixel is (row_start, col_start); parts outside the image are dropped."""
        rows, cols = self.values.shape
        top, left = max(row_start, 0), max(col_start, 0)
        bottom = min(row_start + patch.shape[0], rows)
        right = min(col_start + patch.shape[1], cols)
        if bottom <= top or right <= left:
            return
        window = (slice(top, bottom), slice(left, right))
        inner = patch[top - row_start : bottom - row_start, left - col_start : right - col_start]
        self.values[window] = np.clip(self.values[window] + inner, self.lower[window], self.upper[window])

    def room(self, rows: slice, cols: slice) -> tuple[np.ndarray, np.ndarray]:
        """Return how far each pixel of a window may still move down (<= 0) and up (>= 0)."""
        current = self.values[rows, cols]
        return self.lower[rows, cols] - current, self.upper[rows, cols] - current

    def quantized(self) -> np.ndarray:
        """Return the uint8 grey image, the input of detection."""
        return images.quantize_to_uint8(self.values)


def detect_unique(grey_levels: np.ndarray, parameters: scale_space.SiftParameters) -> scale_space.Keypoints:
    """Detect SIFT keypoints on the uint8 version of a grey image, one per location."""
    return scale_space.detect_keypoints(images.quantize_to_uint8(grey_levels), parameters).unique_locations()


def select_targets(keypoints: scale_space.Keypoints, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Choose which original keypoints an attack goes after.

    Args:
      keypoints: keypoints of the original image.
      fraction: share of them to attack, in (0, 1].
      rng: random generator; only used when fraction < 1.

    Returns:
      bool mask (len(keypoints),).
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"Invalid keypoint fraction {fraction}: expected a value in (0, 1].")
    mask = np.zeros(len(keypoints), dtype=bool)
    count = int(round(fraction * len(keypoints)))
    if fraction == 1.0:
        mask[:] = True
    elif count:
        mask[rng.choice(len(keypoints), size=count, replace=False)] = True
    return mask


@dataclasses.dataclass(frozen=True)
class DogNodes:
    """DoG pyramid positions of keypoints, with the sign of their extremum.

    Attributes:
      octave, layer, row, col: int arrays, position of the discrete extremum each
        keypoint was refined from (its own position when it cannot be traced).
      sign: float array, +1 for DoG maxima (dark blobs), -1 for minima (bright blobs).
    """

    octave: np.ndarray
    layer: np.ndarray
    row: np.ndarray
    col: np.ndarray
    sign: np.ndarray

    def __len__(self) -> int:
        return len(self.octave)


def trace_keypoint_nodes(
    grey_uint8: np.ndarray, keypoints: scale_space.Keypoints, parameters: scale_space.SiftParameters
) -> DogNodes:
    """Find the discrete DoG extremum behind each keypoint of a uint8 grey image."""
    gaussian = scale_space.build_gaussian_pyramid(grey_uint8, parameters)
    dog = scale_space.build_dog_pyramid(gaussian)
    candidates = scale_space.find_candidates(dog, parameters)
    refined = scale_space.refine_candidates(dog, candidates, parameters)
    sources = scale_space.trace_to_candidates(keypoints, candidates, refined)

    traced = sources >= 0
    octave = np.where(traced, candidates.octave[np.maximum(sources, 0)], keypoints.octave)
    layer = np.where(traced, candidates.layer[np.maximum(sources, 0)], keypoints.layer)
    row = np.where(traced, candidates.row[np.maximum(sources, 0)], keypoints.row)
    col = np.where(traced, candidates.col[np.maximum(sources, 0)], keypoints.col)
    values = np.array([dog[o][s, r, c] for o, s, r, c in zip(octave, layer, row, col)], dtype=np.float64)
    return DogNodes(octave=octave, layer=layer, row=row, col=col, sign=np.where(values >= 0, 1.0, -1.0))


def surviving_targets(
    grey_levels: np.ndarray,
    originals: scale_space.Keypoints,
    targeted: np.ndarray,
    parameters: scale_space.SiftParameters,
) -> tuple[scale_space.Keypoints, np.ndarray]:
    """Detect keypoints and return those that match a targeted original keypoint.

    Returns:
      (keypoints that are still targets, index of the original keypoint each matches).
    """
    current = detect_unique(grey_levels, parameters)
    _, match = keypoint_sets.match_locations(originals, current)
    is_target = match >= 0
    is_target[is_target] = targeted[match[is_target]]
    return current.select(is_target), match[is_target]


def octave_to_image(octave: int, row_or_col):
    """Convert DoG coordinates of an octave to image pixel coordinates."""
    return np.asarray(row_or_col) * 2.0 ** (octave - 1)
