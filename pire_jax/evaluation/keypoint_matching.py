"""SIFT matching between an image pair and counting of correct matches under a homography.

Measures what a keypoint attack does to local-feature matching, the mechanism behind
SIFT-based retrieval. Keypoints and descriptors come from OpenCV's SIFT on the grey
image (`pire_jax.images.rgb_to_grey`, rounded to uint8). Matches come from Lowe's ratio
test ("Distinctive image features from scale-invariant keypoints", IJCV 2004). A match
is correct when the homography maps the first keypoint within `tolerance_px` pixels of
the second (3 px by default).
"""

import dataclasses
import os

import cv2
import numpy as np

from pire_jax import images
from pire_jax.attacks.keypoints import scale_space

LOWE_RATIO = 0.8  # Lowe 2004: rejects 90% of false matches, loses 5% of correct ones.
CORRECT_MATCH_TOLERANCE_PX = 3.0
RANSAC_REPROJECTION_THRESHOLD_PX = 3.0


@dataclasses.dataclass(frozen=True)
class ImageFeatures:
    """SIFT keypoint positions (float64 (n, 2), x and y in pixels) and descriptors (float32 (n, 128))."""

    points: np.ndarray
    descriptors: np.ndarray

    def __len__(self) -> int:
        return len(self.points)


def describe_image(image: np.ndarray, parameters: scale_space.SiftParameters = scale_space.DEFAULT_PARAMETERS) -> ImageFeatures:
    """Detect and describe SIFT keypoints of a uint8 RGB image (one entry per orientation)."""
    images.check_uint8_image(image)
    grey = images.quantize_to_uint8(images.rgb_to_grey(image))
    keypoints, descriptors = parameters.create_detector().detectAndCompute(grey, None)
    if descriptors is None:
        return ImageFeatures(np.zeros((0, 2)), np.zeros((0, 128), np.float32))
    points = np.array([keypoint.pt for keypoint in keypoints], dtype=np.float64).reshape(-1, 2)
    return ImageFeatures(points, descriptors.astype(np.float32))


def match_features(first: ImageFeatures, second: ImageFeatures, ratio: float = LOWE_RATIO) -> np.ndarray:
    """Match descriptors with the ratio test (nearest / second nearest L2 distance < ratio).

    Returns:
      int array (n_matches, 2) of (index in first, index in second).
    """
    if not 0 < ratio <= 1:
        raise ValueError(f"Invalid ratio {ratio}: expected a value in (0, 1].")
    if len(first) == 0 or len(second) < 2:
        return np.zeros((0, 2), dtype=np.int64)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(first.descriptors, second.descriptors, k=2)
    kept = [(best.queryIdx, best.trainIdx) for best, runner_up in pairs if best.distance < ratio * runner_up.distance]
    return np.array(kept, dtype=np.int64).reshape(-1, 2)


def project(points: np.ndarray, homography: np.ndarray) -> np.ndarray:
    """Map (n, 2) pixel positions with a 3 x 3 homography."""
    homogeneous = np.hstack([points, np.ones((len(points), 1))]) @ np.asarray(homography, dtype=np.float64).T
    return homogeneous[:, :2] / homogeneous[:, 2:3]


def correct_matches(
    first: ImageFeatures,
    second: ImageFeatures,
    matches: np.ndarray,
    homography: np.ndarray,
    tolerance_px: float = CORRECT_MATCH_TOLERANCE_PX,
) -> np.ndarray:
    """Return a bool mask of the matches whose first point the homography maps within tolerance_px of the second."""
    if len(matches) == 0:
        return np.zeros(0, dtype=bool)
    mapped = project(first.points[matches[:, 0]], homography)
    return np.linalg.norm(mapped - second.points[matches[:, 1]], axis=1) <= tolerance_px


def read_homography(path: str | os.PathLike) -> np.ndarray:
    """Read the first matrix of an OpenCV FileStorage file (e.g. H1to3p.xml) as float64 (3, 3)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Homography file not found: {path}.")
    storage = cv2.FileStorage(path, cv2.FILE_STORAGE_READ)
    try:
        matrix = storage.getFirstTopLevelNode().mat()
    finally:
        storage.release()
    if matrix is None or matrix.shape != (3, 3):
        shape = None if matrix is None else matrix.shape
        raise ValueError(f"Invalid homography in {path}: expected a 3 x 3 matrix, got {shape}.")
    return matrix.astype(np.float64)


def estimate_homography(
    first: ImageFeatures, second: ImageFeatures, matches: np.ndarray
) -> tuple[np.ndarray, int]:
    """Estimate the homography of a pair from ratio-test matches with RANSAC (OpenCV, 3 px).

    Returns:
      (float64 (3, 3) homography, number of RANSAC inliers).
    """
    if len(matches) < 4:
        raise ValueError(f"Cannot estimate a homography from {len(matches)} matches; at least 4 are needed.")
    homography, inliers = cv2.findHomography(
        first.points[matches[:, 0]],
        second.points[matches[:, 1]],
        cv2.RANSAC,
        RANSAC_REPROJECTION_THRESHOLD_PX,
        maxIters=10000,
        confidence=0.999,
    )
    if homography is None:
        raise ValueError(f"RANSAC found no homography among {len(matches)} matches.")
    return homography.astype(np.float64), int(inliers.sum())


def match_pair(
    first_image: np.ndarray,
    second_image: np.ndarray,
    homography: np.ndarray,
    parameters: scale_space.SiftParameters = scale_space.DEFAULT_PARAMETERS,
    second_features: ImageFeatures | None = None,
) -> dict:
    """Match two uint8 RGB images and count the correct matches.

    Args:
      first_image, second_image: uint8 (H, W, 3); the homography maps first to second.
      homography: float (3, 3).
      parameters: SIFT settings.
      second_features: features of second_image when already computed.

    Returns:
      dict with "keypoints_first", "keypoints_second", "matches" and "correct_matches".
    """
    first = describe_image(first_image, parameters)
    second = second_features if second_features is not None else describe_image(second_image, parameters)
    matches = match_features(first, second)
    correct = correct_matches(first, second, matches, homography)
    return {
        "keypoints_first": len(first),
        "keypoints_second": len(second),
        "matches": int(len(matches)),
        "correct_matches": int(correct.sum()),
    }
