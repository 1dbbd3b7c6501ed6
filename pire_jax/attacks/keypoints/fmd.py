"""FMD: forging new SIFT keypoints with minimum local distortion.

Do, Kijak, Furon and Amsaleg, "Understanding the security and robustness of SIFT",
ACM Multimedia 2010. Adding a multiple of k, the DoG kernel of a pyramid position p,
raises the DoG value at p faster than at its spatial neighbours. So it can make p an
extremum above the contrast threshold, which is a new keypoint whose descriptor
describes the added blob, not the scene. One kernel alone is not enough across scales: the DoG one
layer finer can rise faster than p itself (its kernel has the larger norm). The patch
is therefore the least-L2 combination of the DoG kernels of p's position at layers
s-1, s and s+1 that makes p exceed all 26 neighbours by `order_margin` and reach the
aimed contrast. Finding it is a least-distance program in 3 unknowns (`least_distance`).

FMD picks the sites (octave, layer, row, col) whose patch is smallest, among random
candidates spread over the image away from existing and original keypoints, with the
scales of the original keypoints. Sites not detected after a round get a stronger
patch in the next one.

Units: DoG values and patches in grey levels; sites in pyramid coordinates.
"""

import dataclasses
import time

import numpy as np
from absl import logging
from scipy import spatial

from pire_jax.attacks.keypoints import dog_kernels, keypoint_sets, least_distance, scale_space, working_image


@dataclasses.dataclass(frozen=True)
class FmdConfig:
    """Settings of FMD.

    Attributes:
      max_iterations: rounds of detect-and-forge.
      max_abs_change: largest change of any pixel from the original grey image, grey levels.
      forge_fraction: keypoints to forge, as a fraction of the original keypoint count.
      num_forged: keypoints to forge; overrides forge_fraction when set.
      contrast_factor: |DoG| aimed for at a forged site, as a multiple of OpenCV's
        contrast threshold (3.4 grey levels by default).
      order_margin: DoG gap, grey levels, by which a site must exceed its 26 neighbours.
      max_octave: coarsest pyramid octave where keypoints are forged (octave 0 is x2).
      candidates_per_site: random candidate sites priced for every site forged.
      escalation: factor applied to the aimed |DoG| of a site each round it is not detected.
      sift: detector settings.
    """

    max_iterations: int = 4
    max_abs_change: float = 24.0
    forge_fraction: float = 0.5
    num_forged: int | None = None
    contrast_factor: float = 1.5
    order_margin: float = 0.3
    max_octave: int = 3
    candidates_per_site: int = 4
    escalation: float = 1.5
    sift: scale_space.SiftParameters = scale_space.DEFAULT_PARAMETERS

    def __post_init__(self):
        if self.max_iterations < 1:
            raise ValueError(f"Invalid max_iterations {self.max_iterations}: expected at least 1.")
        if self.forge_fraction < 0:
            raise ValueError(f"Invalid forge_fraction {self.forge_fraction}: expected a value >= 0.")
        if self.num_forged is not None and self.num_forged < 0:
            raise ValueError(f"Invalid num_forged {self.num_forged}: expected a count >= 0.")
        if not self.contrast_factor > 1.0:
            raise ValueError(f"Invalid contrast_factor {self.contrast_factor}: a site must exceed the threshold (> 1).")
        if self.candidates_per_site < 1:
            raise ValueError(f"Invalid candidates_per_site {self.candidates_per_site}: expected at least 1.")


@dataclasses.dataclass
class _Sites:
    """Forging sites: pyramid position, sign of the forged extremum and aimed |DoG|."""

    octave: np.ndarray
    layer: np.ndarray
    row: np.ndarray
    col: np.ndarray
    sign: np.ndarray
    goal: np.ndarray

    def as_keypoints(self, parameters: scale_space.SiftParameters) -> scale_space.Keypoints:
        """Return the sites as keypoints (position and size) for location matching."""
        scale = 2.0 ** (self.octave - 1)
        sigma = parameters.sigma * 2.0 ** (self.layer / parameters.num_octave_layers) * scale
        zeros = np.zeros(len(self.octave))
        return scale_space.Keypoints(
            x=self.col * scale,
            y=self.row * scale,
            size=2.0 * sigma,
            angle=zeros,
            response=zeros,
            octave=self.octave,
            layer=self.layer,
            row=self.row,
            col=self.col,
        )


@dataclasses.dataclass(frozen=True)
class _SiteGeometry:
    """DoG kernels of one site shape and how they move its 3 x 3 x 3 neighbourhood.

    Attributes:
      kernels: (3, rows, cols) DoG kernels of layers s-1, s, s+1 at the site, on a
        common pixel window.
      offset: image position of the window's top-left pixel minus the site's pixel.
      responses: (27, 3) DoG change of each neighbour per unit of each kernel.
      whitening: (3, 3) W with ||sum_b c_b k_b|| = ||y|| for c = W y.
    """

    kernels: np.ndarray
    offset: tuple[int, int]
    responses: np.ndarray
    whitening: np.ndarray


_CENTER = 13  # index of the site in its raveled 3 x 3 x 3 neighbourhood


def _site_pixel(octave: int, row: int, col: int) -> tuple[int, int]:
    """Image pixel of a pyramid position (rounded down for the half pixels of octave 0)."""
    if octave == 0:
        return row // 2, col // 2
    return row << (octave - 1), col << (octave - 1)


def _site_geometry(model: dog_kernels.DogLinearModel, octave: int, layer: int, row: int, col: int) -> _SiteGeometry:
    """Compute the kernels of a site and their effect on its neighbourhood, exactly."""
    factors = [model.dog_kernel(octave, layer + shift, row, col) for shift in (-1, 0, 1)]
    top = min(start for start, _, _ in factors)
    left = min(start for _, start, _ in factors)
    bottom = max(start + kernel.shape[0] for start, _, kernel in factors)
    right = max(start + kernel.shape[1] for _, start, kernel in factors)
    kernels = np.zeros((3, bottom - top, right - left))
    for index, (row_start, col_start, kernel) in enumerate(factors):
        kernels[index, row_start - top : row_start - top + kernel.shape[0], col_start - left : col_start - left + kernel.shape[1]] = kernel

    layers = np.array([layer - 1, layer, layer + 1])
    rows, cols = row + np.arange(-1, 2), col + np.arange(-1, 2)
    responses = np.stack(
        [model.patch_dog_values(top, left, kernel, octave, layers, rows, cols).ravel() for kernel in kernels], axis=1
    )
    gram = np.einsum("aij,bij->ab", kernels, kernels)
    # gram = L L^T, so c = L^-T y gives c^T gram c = ||y||^2.
    lower = np.linalg.cholesky(gram + 1e-12 * np.trace(gram) * np.eye(3))
    whitening = np.linalg.inv(lower).T
    pixel_row, pixel_col = _site_pixel(octave, row, col)
    return _SiteGeometry(kernels, (top - pixel_row, left - pixel_col), responses, whitening)


def _solve_site(signed_values: np.ndarray, geometry: _SiteGeometry, goal: float, margin: float):
    """Find the least patch making the site an extremum with signed DoG >= goal.

    Args:
      signed_values: (27,) DoG values of the neighbourhood times the forged sign.

    Returns:
      (kernel coefficients (3,) or None when infeasible, L2 norm of the patch).
    """
    neighbours = np.arange(27) != _CENTER
    moves = geometry.responses @ geometry.whitening
    constraints = np.vstack([moves[_CENTER][None, :], moves[_CENTER][None, :] - moves[neighbours]])
    bounds = np.concatenate(
        [[goal - signed_values[_CENTER]], signed_values[neighbours] - signed_values[_CENTER] + margin]
    )
    solution = least_distance.solve_least_distance(constraints, bounds)
    if solution is None:
        return None, np.inf
    return geometry.whitening @ solution, float(np.linalg.norm(solution))


class _GeometryCache:
    """Site geometries by (octave, layer) and, in octave 0, the parity of row and column.

    Away from the image border the kernels of a site shape are translates of each
    other, so one geometry computed near the centre of the octave serves all sites.
    NOTE: sites whose kernels reach the border use these interior kernels too; the
    re-detection after each round catches the few that this leaves undetected.
    """

    def __init__(self, model: dog_kernels.DogLinearModel):
        self._model = model
        self._cache = {}

    def get(self, octave: int, layer: int, row: int, col: int) -> _SiteGeometry:
        parity = (row % 2, col % 2) if octave == 0 else (0, 0)
        key = (octave, layer) + parity
        if key not in self._cache:
            rows, cols = self._model.octave_shapes[octave]
            center_row = (rows // 2) - (rows // 2) % 2 + parity[0]
            center_col = (cols // 2) - (cols // 2) % 2 + parity[1]
            self._cache[key] = _site_geometry(self._model, octave, layer, center_row, center_col)
        return self._cache[key]


def _apply_site(
    image: working_image.WorkingImage,
    model: dog_kernels.DogLinearModel,
    geometries: _GeometryCache,
    sites: _Sites,
    index: int,
    margin: float,
) -> None:
    """Add the least kernel combination that makes one site an extremum of its sign above its goal."""
    octave, layer = int(sites.octave[index]), int(sites.layer[index])
    row, col = int(sites.row[index]), int(sites.col[index])
    geometry = geometries.get(octave, layer, row, col)
    layers = np.array([layer - 1, layer, layer + 1])
    values = model.dog_values(image.values, octave, layers, row + np.arange(-1, 2), col + np.arange(-1, 2)).ravel()
    coefficients, _ = _solve_site(sites.sign[index] * values, geometry, float(sites.goal[index]), margin)
    if coefficients is None or not np.any(coefficients):
        return
    patch = sites.sign[index] * np.tensordot(coefficients, geometry.kernels, axes=1)
    pixel_row, pixel_col = _site_pixel(octave, row, col)
    image.add_patch(pixel_row + geometry.offset[0], pixel_col + geometry.offset[1], patch)


def _choose_sites(
    image: working_image.WorkingImage,
    model: dog_kernels.DogLinearModel,
    geometries: _GeometryCache,
    originals: scale_space.Keypoints,
    current: scale_space.Keypoints,
    count: int,
    config: FmdConfig,
    rng: np.random.Generator,
) -> _Sites:
    """Pick `count` cheap sites among random candidates, apart from keypoints and each other."""
    parameters = config.sift
    usable_octaves = [
        octave
        for octave in range(min(config.max_octave, model.num_octaves - 1) + 1)
        if min(model.octave_shapes[octave]) > 2 * (scale_space.IMAGE_BORDER + 2)
    ]
    if not usable_octaves or count == 0:
        return _Sites(*(np.zeros(0, dtype=np.int64) for _ in range(4)), np.zeros(0), np.zeros(0))

    # Scales follow the original keypoints, so forged keypoints look like real ones.
    from_originals = np.isin(originals.octave, usable_octaves)
    candidates = count * config.candidates_per_site
    if np.any(from_originals):
        picks = rng.choice(np.nonzero(from_originals)[0], size=candidates)
        octaves, layers = originals.octave[picks], originals.layer[picks]
    else:
        octaves = rng.choice(usable_octaves, size=candidates)
        layers = rng.integers(1, parameters.num_octave_layers + 1, size=candidates)
    low = scale_space.IMAGE_BORDER + 2
    shapes = np.array(model.octave_shapes)[octaves]
    rows = low + np.floor(rng.random(candidates) * (shapes[:, 0] - 2 * low)).astype(np.int64)
    cols = low + np.floor(rng.random(candidates) * (shapes[:, 1] - 2 * low)).astype(np.int64)

    goal = config.contrast_factor * parameters.contrast_threshold_grey_levels
    dog = scale_space.build_dog_pyramid(scale_space.build_gaussian_pyramid(image.values, parameters))
    signs = np.zeros(candidates)
    costs = np.full(candidates, np.inf)
    for index in range(candidates):
        octave, layer, row, col = int(octaves[index]), int(layers[index]), int(rows[index]), int(cols[index])
        values = dog[octave][layer - 1 : layer + 2, row - 1 : row + 2, col - 1 : col + 2].astype(np.float64).ravel()
        geometry = geometries.get(octave, layer, row, col)
        for sign in (1.0, -1.0):
            _, cost = _solve_site(sign * values, geometry, goal, config.order_margin)
            if cost < costs[index]:
                signs[index], costs[index] = sign, cost

    # Greedy: cheapest first, at least 4 site sigmas from chosen sites, from the keypoints
    # detected now and from the original keypoints (forging where LS removed a keypoint
    # would bring a keypoint back at its old position).
    scale = 2.0 ** (octaves - 1)
    x, y = cols * scale, rows * scale
    sigma = parameters.sigma * 2.0 ** (layers / parameters.num_octave_layers) * scale
    exclusion = np.maximum(4.0, 4.0 * sigma)
    keypoint_positions = np.concatenate(
        [np.stack([current.x, current.y], axis=1), np.stack([originals.x, originals.y], axis=1)]
    )
    keypoint_tree = spatial.cKDTree(keypoint_positions) if len(keypoint_positions) else None
    chosen_x, chosen_y = np.zeros(count), np.zeros(count)
    chosen = []
    for index in np.argsort(costs, kind="stable"):
        if not np.isfinite(costs[index]):
            break
        if keypoint_tree is not None and keypoint_tree.query_ball_point((x[index], y[index]), exclusion[index]):
            continue
        taken = len(chosen)
        if np.any(np.hypot(chosen_x[:taken] - x[index], chosen_y[:taken] - y[index]) < exclusion[index]):
            continue
        chosen_x[taken], chosen_y[taken] = x[index], y[index]
        chosen.append(index)
        if len(chosen) == count:
            break
    chosen = np.asarray(chosen, dtype=np.int64)
    return _Sites(
        octave=octaves[chosen],
        layer=layers[chosen],
        row=rows[chosen],
        col=cols[chosen],
        sign=signs[chosen],
        goal=np.full(len(chosen), goal),
    )


def forge_keypoints_fmd(
    grey_levels: np.ndarray,
    reference_grey: np.ndarray,
    originals: scale_space.Keypoints,
    config: FmdConfig,
    rng: np.random.Generator,
    num_forged: int | None = None,
) -> tuple[np.ndarray, dict]:
    """Add new SIFT keypoints with DoG-kernel patches.

    Args:
      grey_levels: image to change (H, W), grey levels.
      reference_grey: unattacked grey image; `max_abs_change` is measured from it.
      originals: keypoints of the unattacked image (one per location).
      config: FMD settings.
      rng: random generator for the candidate sites.
      num_forged: keypoints to forge; overrides the config (LS+FMD forges as many as
        LS removed).

    Returns:
      (changed grey image, float32 (H, W), grey levels; details dict with
      "iterations", "sites", "sites_detected" (sites with a keypoint after the last
      round) and "seconds").
    """
    scale_space.check_grey_image(grey_levels)
    start = time.perf_counter()
    image = working_image.WorkingImage(grey_levels, reference_grey, config.max_abs_change)
    model = dog_kernels.linear_model_for(*image.shape, config.sift)
    if num_forged is None:
        num_forged = config.num_forged
    if num_forged is None:
        num_forged = int(round(config.forge_fraction * len(originals)))

    current = working_image.detect_unique(image.values, config.sift)
    geometries = _GeometryCache(model)
    sites = _choose_sites(image, model, geometries, originals, current, num_forged, config, rng)
    logging.info("FMD: %d sites chosen for %d requested keypoints.", len(sites.octave), num_forged)
    pending = np.ones(len(sites.octave), dtype=bool)
    iterations = 0
    detected = np.zeros(len(sites.octave), dtype=bool)

    while iterations < config.max_iterations and np.any(pending):
        iterations += 1
        for index in np.nonzero(pending)[0]:
            _apply_site(image, model, geometries, sites, index, config.order_margin)
        current = working_image.detect_unique(image.values, config.sift)
        detected, _ = keypoint_sets.match_locations(sites.as_keypoints(config.sift), current)
        pending = ~detected
        sites.goal[pending] *= config.escalation
        logging.info("FMD iteration %d: %d of %d sites detected.", iterations, int(detected.sum()), len(detected))

    seconds = time.perf_counter() - start
    logging.info("FMD finished after %d iterations in %.1f s.", iterations, seconds)
    details = {
        "iterations": iterations,
        "sites": int(len(sites.octave)),
        "sites_detected": int(detected.sum()),
        "seconds": seconds,
    }
    return image.values.astype(np.float32), details
