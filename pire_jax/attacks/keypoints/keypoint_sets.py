"""Matching of keypoint locations between an image and a changed copy, to count removed and forged keypoints.

An attack counts an original keypoint as removed when no keypoint of the attacked image
lies at about the same position and scale, and counts an attacked-image keypoint as
forged when it matches no original keypoint. Positions are in pixels of the image,
scales are SIFT sizes (twice the keypoint sigma), both as OpenCV reports them.
"""

import numpy as np
from scipy import spatial

from pire_jax.attacks.keypoints.scale_space import Keypoints

# A keypoint moved by less than max(1.5 px, half its sigma) and rescaled by less than
# half an octave is the same keypoint. Tighter tolerances would count the sub-pixel
# jitter that any change of the image causes as removal plus forging.
MIN_POSITION_TOLERANCE_PX = 1.5
POSITION_TOLERANCE_SIGMAS = 0.5
MAX_LOG2_SCALE_CHANGE = 0.5


def match_locations(reference: Keypoints, current: Keypoints) -> tuple[np.ndarray, np.ndarray]:
    """Match two keypoint sets by position and scale.

    Args:
      reference: keypoints of the original image.
      current: keypoints of the changed image.

    Returns:
      (reference_survives, current_match). reference_survives is bool
      (len(reference),) and True where some current keypoint matches the reference
      keypoint. current_match is int (len(current),), the index of the nearest matched
      reference keypoint or -1.
    """
    reference_survives = np.zeros(len(reference), dtype=bool)
    current_match = np.full(len(current), -1, dtype=np.int64)
    if len(reference) == 0 or len(current) == 0:
        return reference_survives, current_match

    tolerance = np.maximum(MIN_POSITION_TOLERANCE_PX, POSITION_TOLERANCE_SIGMAS * reference.size / 2.0)
    tree = spatial.cKDTree(np.stack([current.x, current.y], axis=1))
    reference_points = np.stack([reference.x, reference.y], axis=1)
    best_distance = np.full(len(current), np.inf)
    for index, neighbours in enumerate(tree.query_ball_point(reference_points, tolerance)):
        if not neighbours:
            continue
        neighbours = np.asarray(neighbours)
        scale_change = np.abs(np.log2(current.size[neighbours] / reference.size[index]))
        neighbours = neighbours[scale_change <= MAX_LOG2_SCALE_CHANGE]
        if len(neighbours) == 0:
            continue
        reference_survives[index] = True
        distance = np.hypot(current.x[neighbours] - reference.x[index], current.y[neighbours] - reference.y[index])
        closer = distance < best_distance[neighbours]
        best_distance[neighbours[closer]] = distance[closer]
        current_match[neighbours[closer]] = index
    return reference_survives, current_match
