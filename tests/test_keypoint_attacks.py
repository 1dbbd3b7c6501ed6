"""SIFT keypoint attacks (RMD, LS, FMD, RDG) on synthetic blob images, checked with OpenCV's detector."""

import dataclasses

import numpy as np
import pytest
from scipy import optimize

from pire_jax import images
from pire_jax.attacks.keypoints import (
    dog_kernels,
    fmd,
    keypoint_sets,
    least_distance,
    local_smoothing,
    rdg,
    registry,
    rmd,
    scale_space,
    working_image,
)

PARAMETERS = scale_space.DEFAULT_PARAMETERS


def blob_image(size=96, blobs=((48, 48, 1.5, -60.0),), background=128.0):
    """Grey image (grey levels) with Gaussian blobs (row, col, sigma px, amplitude grey levels)."""
    rows, cols = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.full((size, size), background)
    for row, col, sigma, amplitude in blobs:
        image += amplitude * np.exp(-((rows - row) ** 2 + (cols - col) ** 2) / (2 * sigma**2))
    return np.clip(image, 0, 255).astype(np.float32)


def textured_image(size=128, seed=0):
    """Grey image with many random blobs of several scales, a stand-in for a photo."""
    rng = np.random.default_rng(seed)
    blobs = [
        (rng.uniform(8, size - 8), rng.uniform(8, size - 8), rng.uniform(1.2, 4.0), rng.choice([-1, 1]) * rng.uniform(30, 80))
        for _ in range(40)
    ]
    return blob_image(size, blobs)


def keypoint_near(keypoints, x, y, tolerance=1.5):
    return bool(np.any(np.hypot(keypoints.x - x, keypoints.y - y) <= tolerance))


def test_scale_space_replicates_opencv():
    grey = images.quantize_to_uint8(textured_image())
    detected = scale_space.detect_keypoints(grey).unique_locations()
    dog = scale_space.build_dog_pyramid(scale_space.build_gaussian_pyramid(grey))
    candidates = scale_space.find_candidates(dog)
    refined = scale_space.refine_candidates(dog, candidates)
    ours = set(
        zip(
            candidates.octave[refined.accepted],
            refined.layer[refined.accepted],
            refined.row[refined.accepted],
            refined.col[refined.accepted],
        )
    )
    theirs = set(zip(detected.octave, detected.layer, detected.row, detected.col))
    assert len(theirs) > 20
    assert ours == theirs


def test_scale_space_octave_count():
    assert scale_space.count_octaves(768, 1024) == 10
    assert scale_space.octave_shapes(64, 80)[:3] == [(128, 160), (64, 80), (32, 40)]


def test_dog_model_matches_pyramid():
    grey = textured_image(size=80)
    model = dog_kernels.DogLinearModel(*grey.shape)
    dog = scale_space.build_dog_pyramid(scale_space.build_gaussian_pyramid(grey))
    for octave in range(model.num_octaves):
        rows_count, cols_count = dog[octave].shape[1:]
        rows = np.unique([0, 1, rows_count // 2, rows_count - 1])
        cols = np.unique([0, 2, cols_count // 3, cols_count - 1])
        values = model.dog_values(grey, octave, np.arange(5), rows, cols)
        np.testing.assert_allclose(values, dog[octave][:, rows][:, :, cols], atol=2e-3)


def test_dog_kernel_inner_product():
    grey = textured_image(size=80).astype(np.float64)
    model = dog_kernels.DogLinearModel(*grey.shape)
    row_start, col_start, kernel = model.dog_kernel(1, 2, 40, 30)
    window = grey[row_start : row_start + kernel.shape[0], col_start : col_start + kernel.shape[1]]
    assert np.sum(kernel * window) == pytest.approx(model.dog_values(grey, 1, [2], [40], [30])[0, 0, 0], abs=1e-6)
    assert model.dog_kernel_norm_squared(1, 2, 40, 30) == pytest.approx(np.sum(kernel**2), rel=1e-9)


def test_least_distance_known_solution():
    solution = least_distance.solve_least_distance(np.array([[1.0, 1.0], [1.0, 0.0]]), np.array([2.0, -5.0]))
    np.testing.assert_allclose(solution, [1.0, 1.0], atol=1e-9)


def test_least_distance_infeasible():
    assert least_distance.solve_least_distance(np.array([[1.0], [-1.0]]), np.array([1.0, 0.0])) is None


def test_least_distance_optimal_on_random_problem():
    rng = np.random.default_rng(1)
    constraints = rng.normal(size=(12, 5))
    feasible_point = rng.normal(size=5) * 3
    bounds = constraints @ feasible_point - np.abs(rng.normal(size=12))
    solution = least_distance.solve_least_distance(constraints, bounds)
    assert solution is not None
    assert np.all(constraints @ solution >= bounds - 1e-8)
    assert np.linalg.norm(solution) <= np.linalg.norm(feasible_point)
    reference = optimize.minimize(
        lambda y: y @ y,
        feasible_point,
        jac=lambda y: 2 * y,
        constraints=[{"type": "ineq", "fun": lambda y: constraints @ y - bounds, "jac": lambda y: constraints}],
        method="SLSQP",
        options={"ftol": 1e-12, "maxiter": 500},
    )
    assert np.linalg.norm(solution) == pytest.approx(np.linalg.norm(reference.x), abs=1e-5)


def _single_target(grey, x, y):
    originals = working_image.detect_unique(grey, PARAMETERS)
    targeted = np.hypot(originals.x - x, originals.y - y) <= 2.0
    assert targeted.any(), "the test blob must give a keypoint"
    return originals, targeted


BLOBS = ((30, 30, 1.5, -60.0), (30, 66, 1.5, 60.0), (66, 48, 2.5, -70.0))


def test_rmd_removes_targeted_keypoint():
    grey = blob_image(blobs=BLOBS)
    originals, targeted = _single_target(grey, 30, 30)
    attacked, details = rmd.remove_keypoints_rmd(grey, grey, originals, targeted, rmd.RmdConfig(max_abs_change=48))
    after = working_image.detect_unique(attacked, PARAMETERS)
    survives, _ = keypoint_sets.match_locations(originals, after)
    assert not survives[targeted].any()
    assert survives[~targeted].all()
    assert details["patches"] >= 1
    assert np.abs(attacked - grey).max() <= 48 + 1e-4


def test_rdg_removes_targeted_keypoint():
    # A weaker target blob than BLOBS: RDG only changes a 7 x 7 window, so a strong
    # isolated blob needs more than the bound.
    grey = blob_image(blobs=((30, 30, 1.5, -45.0),) + BLOBS[1:])
    originals, targeted = _single_target(grey, 30, 30)
    attacked, details = rdg.remove_keypoints_rdg(grey, grey, originals, targeted, rdg.RdgConfig(max_abs_change=32))
    after = working_image.detect_unique(attacked, PARAMETERS)
    survives, match = keypoint_sets.match_locations(originals, after)
    assert not survives[targeted].any()
    assert survives[~targeted].all()
    assert np.all(match >= 0), "RDG must not create keypoints here"
    assert details["changed"] >= 1
    assert np.abs(attacked - grey).max() <= 32 + 1e-4
    # RDG only touches a 7 x 7 window (one image pixel per block below octave 2).
    changed_rows, changed_cols = np.nonzero(np.abs(attacked - grey) > 1e-6)
    assert changed_rows.min() >= 30 - 4
    assert changed_rows.max() <= 30 + 4
    assert changed_cols.min() >= 30 - 4
    assert changed_cols.max() <= 30 + 4


def test_rdg_respects_distortion_bound():
    grey = textured_image(size=96, seed=3)
    originals = working_image.detect_unique(grey, PARAMETERS)
    config = rdg.RdgConfig(max_abs_change=6.0, max_iterations=2)
    attacked, _ = rdg.remove_keypoints_rdg(grey, grey, originals, np.ones(len(originals), bool), config)
    assert np.abs(attacked.astype(np.float64) - grey).max() <= 6.0 + 1e-4


def test_fmd_adds_detectable_keypoints():
    grey = blob_image(blobs=BLOBS)
    originals = working_image.detect_unique(grey, PARAMETERS)
    attacked, details = fmd.forge_keypoints_fmd(
        grey, grey, originals, fmd.FmdConfig(num_forged=3), np.random.default_rng(0)
    )
    after = working_image.detect_unique(attacked, PARAMETERS)
    survives, match = keypoint_sets.match_locations(originals, after)
    assert details["sites"] == 3
    assert details["sites_detected"] >= 2
    assert np.sum(match < 0) >= 2
    assert survives.all()


def test_ls_changes_only_inside_supports():
    grey = textured_image(size=96, seed=5)
    originals = working_image.detect_unique(grey, PARAMETERS)
    config = local_smoothing.LocalSmoothingConfig(max_iterations=1, max_abs_change=255)
    attacked, _ = local_smoothing.remove_keypoints_ls(grey, grey, originals, np.ones(len(originals), bool), config)
    rows, cols = np.mgrid[0 : grey.shape[0], 0 : grey.shape[1]]
    inside = np.zeros(grey.shape, dtype=bool)
    for x, y, size in zip(originals.x, originals.y, originals.size):
        inside |= np.hypot(cols - x, rows - y) < config.support_radius * size / 2.0
    changed = np.abs(attacked - grey) > 1e-4
    assert changed.any()
    assert not np.any(changed & ~inside)


def test_ls_removes_most_keypoints():
    grey = textured_image(size=128, seed=7)
    originals = working_image.detect_unique(grey, PARAMETERS)
    attacked, _ = local_smoothing.remove_keypoints_ls(
        grey, grey, originals, np.ones(len(originals), bool), local_smoothing.LocalSmoothingConfig()
    )
    survives, _ = keypoint_sets.match_locations(originals, working_image.detect_unique(attacked, PARAMETERS))
    assert survives.mean() < 0.2


def test_working_image_keeps_earlier_stage_changes():
    reference = np.full((20, 20), 100.0)
    earlier = reference.copy()
    earlier[5, 5] = 160.0
    image = working_image.WorkingImage(earlier, reference, max_abs_change=10.0)
    assert image.values[5, 5] == 160.0
    image.add_patch(0, 0, np.full((20, 20), 30.0))
    assert image.values[5, 5] == 160.0
    assert image.values[0, 0] == 110.0


def _rgb(grey):
    tint = np.stack([grey * 0.9 + 20, grey, grey * 0.8 + 10], axis=-1)
    return images.quantize_to_uint8(tint)


@pytest.mark.parametrize("name", ["rmd", "ls", "fmd", "rdg", "rmd+ls", "ls+fmd"])
def test_registry_same_seed_same_output(name):
    image = _rgb(textured_image(size=80, seed=2))
    overrides = {"max_iterations": 2} if name in ("rmd", "ls", "fmd", "rdg") else None
    first, first_report = registry.apply_query_modification(name, image, overrides, seed=4)
    second, second_report = registry.apply_query_modification(name, image, overrides, seed=4)
    np.testing.assert_array_equal(first, second)
    assert first.dtype == np.uint8
    assert first.shape == image.shape
    assert first_report["removed"] == second_report["removed"]
    assert first_report["removed"] + first_report["remaining"] == first_report["keypoints_before"]


def test_registry_fmd_seed_changes_sites():
    image = _rgb(textured_image(size=96, seed=2))
    first, _ = registry.apply_query_modification("fmd", image, {"num_forged": 4}, seed=0)
    second, _ = registry.apply_query_modification("fmd", image, {"num_forged": 4}, seed=1)
    assert not np.array_equal(first, second)


def test_registry_report_of_removal():
    image = _rgb(blob_image(blobs=BLOBS))
    modified, report = registry.apply_query_modification("ls", image, None, seed=0)
    assert report["keypoints_before"] >= 3
    assert report["removed_fraction"] == pytest.approx(report["removed"] / report["keypoints_before"])
    assert report["removed"] >= 2
    assert report["colour_recovery"]["max_abs_grey_error"] <= 0.5
    assert 0 < report["ssim"] < 1
    assert report["settings"]["support_radius"] == local_smoothing.LocalSmoothingConfig().support_radius


def test_registry_nested_overrides():
    config = registry.make_config("rmd+ls", {"rmd": {"max_iterations": 2}, "ls": {"sift": {"sigma": 1.5}}})
    assert config.rmd.max_iterations == 2
    assert config.ls.sift.sigma == 1.5
    assert dataclasses.replace(config.rmd, max_iterations=8) == rmd.RmdConfig()


def test_registry_rejects_invalid_input():
    image = _rgb(blob_image())
    with pytest.raises(ValueError, match="Unknown query modification"):
        registry.apply_query_modification("pire", image)
    with pytest.raises(ValueError, match="Unknown setting"):
        registry.make_config("rmd", {"iterations": 3})
    with pytest.raises(ValueError, match="Invalid settings"):
        registry.apply_query_modification("rmd", image, rdg.RdgConfig())
    with pytest.raises(ValueError, match="uint8"):
        registry.apply_query_modification("rmd", image.astype(np.float32))
    with pytest.raises(ValueError, match="max_iterations"):
        rmd.RmdConfig(max_iterations=0)
