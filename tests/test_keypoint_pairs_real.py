"""Keypoint attacks on the real sift_pairs images: matching before and after, image quality.

These tests need PIRE_DATA_ROOT; they use the small box / box_in_scene pair (324 x 223)
for the attacks so that the file runs in well under a minute on 2 cores.
"""

import numpy as np
import pytest

from conftest import require_file
from pire_jax import images
from pire_jax.attacks.keypoints import apply_query_modification
from pire_jax.evaluation import keypoint_matching


@pytest.fixture(scope="module")
def box_pair(data_root):
    first = images.load_image(require_file(data_root, "sift_pairs", "box.png"))
    second = images.load_image(require_file(data_root, "sift_pairs", "box_in_scene.png"))
    first_features = keypoint_matching.describe_image(first)
    second_features = keypoint_matching.describe_image(second)
    matches = keypoint_matching.match_features(first_features, second_features)
    homography, inliers = keypoint_matching.estimate_homography(first_features, second_features, matches)
    original = keypoint_matching.match_pair(first, second, homography, second_features=second_features)
    return first, second, second_features, homography, inliers, original


def test_graf_homography_file(data_root):
    homography = keypoint_matching.read_homography(require_file(data_root, "sift_pairs", "H1to3p.xml"))
    assert homography.shape == (3, 3)
    assert homography[0, 2] == pytest.approx(225.67123)
    assert homography[2, 2] == pytest.approx(1.0)


def test_graf_unattacked_matches_mostly_correct(data_root):
    first = images.load_image(require_file(data_root, "sift_pairs", "graf1.png"))
    second = images.load_image(require_file(data_root, "sift_pairs", "graf3.png"))
    homography = keypoint_matching.read_homography(require_file(data_root, "sift_pairs", "H1to3p.xml"))
    result = keypoint_matching.match_pair(first, second, homography)
    assert result["matches"] > 500
    assert result["correct_matches"] > 300
    # The identity instead of the true homography finds almost no correct match.
    assert keypoint_matching.match_pair(first, second, np.eye(3))["correct_matches"] < 30


def test_box_ransac_reference(box_pair):
    _, _, _, homography, inliers, original = box_pair
    assert inliers >= 40
    assert original["correct_matches"] >= inliers - 5
    # The box appears at about 0.4 of its size in the scene.
    assert 0.3 < np.sqrt(abs(np.linalg.det(homography[:2, :2]))) < 0.6


def test_ls_breaks_box_matching(box_pair):
    first, second, second_features, homography, _, original = box_pair
    attacked, report = apply_query_modification("ls", first, None, seed=0)
    result = keypoint_matching.match_pair(attacked, second, homography, second_features=second_features)
    assert report["removed_fraction"] > 0.8
    assert result["correct_matches"] < 0.5 * original["correct_matches"]
    assert report["ssim"] > 0.8
    assert report["colour_recovery"]["max_abs_grey_error"] <= 0.5


def test_rdg_keeps_box_quality(box_pair):
    first, second, second_features, homography, _, original = box_pair
    attacked, report = apply_query_modification("rdg", first, None, seed=0)
    result = keypoint_matching.match_pair(attacked, second, homography, second_features=second_features)
    assert report["removed_fraction"] > 0.4
    assert result["correct_matches"] < original["correct_matches"]
    assert report["ssim"] > 0.97
    assert report["psnr"] > 33
