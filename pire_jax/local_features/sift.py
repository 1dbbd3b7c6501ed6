"""SIFT keypoints and descriptors from OpenCV, with the RootSIFT option and bounding-box filtering.

Use `extract_sift` for every SIFT extraction, so that the retrieval system and the
keypoint attacks see the same keypoints for the same image. Its grey image comes from
`pire_jax.images.rgb_to_grey` (0.30 R + 0.59 G + 0.11 B). It is rounded to uint8
because OpenCV's SIFT detector accepts 8-bit images only.
"""

import dataclasses
from typing import Sequence

import cv2
import numpy as np

from pire_jax import images

SIFT_DIMENSION = 128  # Lowe 2004: 4x4 spatial cells x 8 orientation bins


@dataclasses.dataclass(frozen=True)
class SiftConfig:
    """Parameters of `cv2.SIFT_create` plus the descriptor post-processing.

    The defaults are OpenCV's (4.x/5.x), which are Lowe's 2004 values.

    Attributes:
      n_features: keep the n strongest keypoints; 0 keeps all.
      n_octave_layers: scales per octave (Lowe: 3).
      contrast_threshold: DoG contrast threshold, for grey levels scaled to 0..1 and
        divided by `n_octave_layers` inside OpenCV (Lowe: 0.04 for 3 layers).
      edge_threshold: maximum ratio of principal curvatures (Lowe: 10).
      sigma: Gaussian blur of the base octave (Lowe: 1.6).
      root_sift: apply RootSIFT (Arandjelovic and Zisserman, CVPR 2012): L1
        normalisation followed by an element-wise square root.
      max_size: downscale images whose long side exceeds this many pixels before
        extraction (`images.resize_long_side`); None extracts at native resolution.
        Keypoint positions are always reported in the input image's pixels.
    """

    n_features: int = 0
    n_octave_layers: int = 3
    contrast_threshold: float = 0.04
    edge_threshold: float = 10.0
    sigma: float = 1.6
    root_sift: bool = False
    max_size: int | None = None

    def __post_init__(self):
        if self.n_features < 0:
            raise ValueError(f"Invalid SIFT n_features {self.n_features}; expected 0 (all) or a positive count.")
        if self.n_octave_layers < 1:
            raise ValueError(f"Invalid SIFT n_octave_layers {self.n_octave_layers}; expected at least 1.")
        if self.max_size is not None and self.max_size < 16:
            raise ValueError(f"Invalid SIFT max_size {self.max_size}; expected None or at least 16 pixels.")


@dataclasses.dataclass(frozen=True)
class LocalFeatures:
    """Keypoints and descriptors of one image.

    Attributes:
      positions: float32 (n, 2), keypoint centres (x, y) in pixels of the input image.
      sizes: float32 (n,), keypoint diameters in pixels of the input image.
      angles: float32 (n,), dominant orientations in degrees (OpenCV convention).
      descriptors: float32 (n, 128); SIFT values 0..255 or RootSIFT values 0..1.
    """

    positions: np.ndarray
    sizes: np.ndarray
    angles: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return self.descriptors.shape[0]


def empty_features() -> LocalFeatures:
    """Return features with no keypoint."""
    return LocalFeatures(
        positions=np.zeros((0, 2), np.float32),
        sizes=np.zeros((0,), np.float32),
        angles=np.zeros((0,), np.float32),
        descriptors=np.zeros((0, SIFT_DIMENSION), np.float32),
    )


def root_sift(descriptors: np.ndarray) -> np.ndarray:
    """Map SIFT descriptors to RootSIFT: L1-normalise, then take the square root of each value.

    Args:
      descriptors: float (n, 128), non-negative.

    Returns:
      float32 (n, 128) with unit L2 norm per non-zero row.
    """
    descriptors = np.asarray(descriptors, dtype=np.float32)
    l1_norms = np.abs(descriptors).sum(axis=1, keepdims=True)
    return np.sqrt(descriptors / np.maximum(l1_norms, np.float32(1e-12)))


def extract_sift(image: np.ndarray, config: SiftConfig = SiftConfig()) -> LocalFeatures:
    """Detect SIFT keypoints and compute their descriptors.

    Args:
      image: uint8 RGB (H, W, 3).
      config: detector and descriptor settings.

    Returns:
      The image's features; an image without keypoints gives zero rows.
    """
    images.check_uint8_image(image, "image for SIFT")
    height, width = image.shape[:2]
    resized = images.resize_long_side(image, config.max_size)
    scale_x = width / resized.shape[1]
    scale_y = height / resized.shape[0]

    # Grey levels 0..255 from the project's luma weights, rounded to uint8 for OpenCV.
    grey = images.quantize_to_uint8(images.rgb_to_grey(resized))
    detector = cv2.SIFT_create(
        nfeatures=config.n_features,
        nOctaveLayers=config.n_octave_layers,
        contrastThreshold=config.contrast_threshold,
        edgeThreshold=config.edge_threshold,
        sigma=config.sigma,
    )
    keypoints, descriptors = detector.detectAndCompute(grey, None)
    if descriptors is None or not keypoints:
        return empty_features()

    positions = np.array([keypoint.pt for keypoint in keypoints], dtype=np.float32).reshape(-1, 2)
    positions *= np.array([scale_x, scale_y], dtype=np.float32)
    sizes = np.array([keypoint.size for keypoint in keypoints], dtype=np.float32) * np.float32(scale_x)
    angles = np.array([keypoint.angle for keypoint in keypoints], dtype=np.float32)
    descriptors = np.asarray(descriptors, dtype=np.float32)
    if config.root_sift:
        descriptors = root_sift(descriptors)
    return LocalFeatures(positions=positions, sizes=sizes, angles=angles, descriptors=descriptors)


def keep_inside_box(features: LocalFeatures, box: Sequence[float]) -> LocalFeatures:
    """Keep the keypoints whose centre lies inside a bounding box, borders included.

    This is how the Oxford protocol forms a bounding-box query for local features:
    extract on the whole image, then drop the keypoints outside the box.

    Args:
      features: features of the whole image.
      box: [x1, y1, x2, y2] in pixels of that image.

    Returns:
      The subset of `features` inside the box.
    """
    x1, y1, x2, y2 = (float(value) for value in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"Invalid bounding box {list(box)}: expected x2 > x1 and y2 > y1.")
    x, y = features.positions[:, 0], features.positions[:, 1]
    inside = (x >= x1) & (x <= x2) & (y >= y1) & (y <= y2)
    return LocalFeatures(
        positions=features.positions[inside],
        sizes=features.sizes[inside],
        angles=features.angles[inside],
        descriptors=features.descriptors[inside],
    )
