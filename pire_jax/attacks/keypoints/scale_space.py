"""The SIFT difference-of-Gaussians (DoG) scale space as OpenCV builds it, and SIFT detection.

The keypoint attacks change pixels so that OpenCV's SIFT detector (`cv2.SIFT`) stops
or starts finding keypoints, so "detected" in this package always means "returned by
`cv2.SIFT_create(...).detect`" on the uint8 grey image. This module rebuilds the same
scale space in float32 to give the attacks DoG values. It also replicates the
detector's candidate search and sub-pixel refinement (`adjustLocalExtrema`), so each
OpenCV keypoint can be traced back to the discrete DoG extremum it came from.

OpenCV's pipeline (Lowe, "Distinctive image features from scale-invariant keypoints",
IJCV 2004, with OpenCV's choices), all in grey levels 0..255:
  1. upsample the grey image x2 with bilinear interpolation (the "octave -1"),
  2. blur it to sigma = 1.6, assuming the input already has blur 0.5 (1.0 after x2),
  3. per octave, blur num_octave_layers + 2 more times so that layer i has total blur
     1.6 * 2^(i / num_octave_layers) in octave pixels, and subtract neighbours (DoG),
  4. start the next octave from layer `num_octave_layers` subsampled by 2,
  5. keep DoG pixels of layers 1..num_octave_layers that are >= (<=) all 26
     neighbours and exceed half the contrast threshold, refine them to sub-pixel
     precision, reject low contrast and edge responses.

Units: pyramid values and DoG values are grey levels. Octave 0 is the upsampled one,
so a DoG pixel (row, col) of octave o lies at (row, col) * 2^(o-1) in the image.

NOTE: some OpenCV sources build the pyramid in 16-bit fixed point (DoG_TYPE_SHORT in
sift.simd.hpp). With the OpenCV 5.1.0 wheel of this project the float32 replica finds
exactly OpenCV's keypoints on the sift_pairs photos and in the tests. A fixed-point
build would differ only for keypoints close to a threshold.
"""

import dataclasses

import cv2
import numpy as np

# Lowe 2004 and OpenCV's SIFT defaults.
NUM_OCTAVE_LAYERS = 3
SIGMA = 1.6
CONTRAST_THRESHOLD = 0.04
EDGE_THRESHOLD = 10.0
# OpenCV: blur assumed in the input image, pixels ignored at the border of every DoG
# layer, and the number of sub-pixel refinement steps before a candidate is dropped.
INITIAL_BLUR = 0.5
IMAGE_BORDER = 5
MAX_REFINEMENT_STEPS = 5


@dataclasses.dataclass(frozen=True)
class SiftParameters:
    """Settings of the SIFT detector, with OpenCV's defaults.

    Attributes:
      num_octave_layers: DoG layers searched per octave (OpenCV nOctaveLayers).
      sigma: blur of layer 0 of each octave, in octave pixels.
      contrast_threshold: OpenCV contrastThreshold, for images scaled to 0..1; it is
        divided by num_octave_layers before use, as OpenCV does.
      edge_threshold: largest ratio of principal curvatures kept (OpenCV edgeThreshold).
    """

    num_octave_layers: int = NUM_OCTAVE_LAYERS
    sigma: float = SIGMA
    contrast_threshold: float = CONTRAST_THRESHOLD
    edge_threshold: float = EDGE_THRESHOLD

    @property
    def candidate_threshold(self) -> float:
        """Minimum |DoG| of a candidate extremum, in grey levels (about 1.7 by default)."""
        return 0.5 * self.contrast_threshold / self.num_octave_layers * 255.0

    @property
    def contrast_threshold_grey_levels(self) -> float:
        """Minimum |DoG| of a keypoint after sub-pixel refinement, in grey levels (3.4)."""
        return self.contrast_threshold / self.num_octave_layers * 255.0

    def layer_sigmas(self) -> np.ndarray:
        """Blur added by each Gaussian layer of an octave (float64, num_octave_layers + 3).

        Entry 0 is the octave's blur `sigma`; entry i > 0 is the incremental blur that
        takes layer i - 1 to total blur sigma * k^i with k = 2^(1 / num_octave_layers).
        """
        k = 2.0 ** (1.0 / self.num_octave_layers)
        sigmas = [self.sigma]
        for i in range(1, self.num_octave_layers + 3):
            previous = self.sigma * k ** (i - 1)
            sigmas.append(float(np.sqrt((previous * k) ** 2 - previous**2)))
        return np.asarray(sigmas)

    def initial_blur(self) -> float:
        """Blur applied to the x2-upsampled image to reach `sigma` (OpenCV createInitialImage)."""
        return float(np.sqrt(max(self.sigma**2 - (2.0 * INITIAL_BLUR) ** 2, 0.01)))

    def create_detector(self) -> cv2.SIFT:
        """Return the OpenCV SIFT detector with these settings."""
        return cv2.SIFT_create(
            nfeatures=0,
            nOctaveLayers=self.num_octave_layers,
            contrastThreshold=self.contrast_threshold,
            edgeThreshold=self.edge_threshold,
            sigma=self.sigma,
        )


DEFAULT_PARAMETERS = SiftParameters()


def gaussian_kernel_size(sigma: float) -> int:
    """Return the kernel size cv2.GaussianBlur picks for a float image and this sigma."""
    return int(np.rint(sigma * 8.0 + 1.0)) | 1


def count_octaves(height: int, width: int) -> int:
    """Return the number of octaves OpenCV's SIFT builds for an image (with the x2 upsampling).

    OpenCV: round(log2(min side of the upsampled image) - 2) + 1.
    """
    if min(height, width) < 1:
        raise ValueError(f"Invalid image size {height}x{width}.")
    return int(np.rint(np.log2(2 * min(height, width)) - 2)) + 1


def octave_shapes(height: int, width: int) -> list[tuple[int, int]]:
    """Return the (rows, cols) of every octave; octave 0 is the x2-upsampled image."""
    shapes = [(2 * height, 2 * width)]
    for _ in range(1, count_octaves(height, width)):
        rows, cols = shapes[-1]
        shapes.append((rows // 2, cols // 2))
    return shapes


def check_grey_image(image: np.ndarray, what: str = "grey image") -> None:
    """Raise ValueError unless `image` is a 2-D uint8 or float array."""
    if not isinstance(image, np.ndarray) or image.ndim != 2:
        shape = getattr(image, "shape", None)
        raise ValueError(f"Invalid {what}: expected a 2-D array (H, W) in grey levels, got shape {shape}.")
    if min(image.shape) < 2 * IMAGE_BORDER + 3:
        raise ValueError(f"Invalid {what}: {image.shape} is too small for SIFT (at least 13x13 pixels).")


def build_gaussian_pyramid(
    grey_levels: np.ndarray, parameters: SiftParameters = DEFAULT_PARAMETERS
) -> list[np.ndarray]:
    """Build OpenCV's SIFT Gaussian pyramid in float32.

    Args:
      grey_levels: grey image (H, W), uint8 or float, 0..255.
      parameters: detector settings.

    Returns:
      One float32 array (num_octave_layers + 3, rows_o, cols_o) per octave, in grey levels.
    """
    check_grey_image(grey_levels)
    image = np.asarray(grey_levels, dtype=np.float32)
    height, width = image.shape
    upsampled = cv2.resize(image, (2 * width, 2 * height), interpolation=cv2.INTER_LINEAR)
    base = cv2.GaussianBlur(upsampled, (0, 0), parameters.initial_blur(), borderType=cv2.BORDER_REFLECT_101)
    sigmas = parameters.layer_sigmas()
    num_layers = parameters.num_octave_layers + 3

    pyramid = []
    for octave in range(count_octaves(height, width)):
        if octave == 0:
            layer = base
        else:
            # Next octave: layer `num_octave_layers` (total blur 2 sigma) taken at even pixels.
            previous = pyramid[-1][parameters.num_octave_layers]
            layer = previous[: 2 * (previous.shape[0] // 2) : 2, : 2 * (previous.shape[1] // 2) : 2]
        layers = [np.ascontiguousarray(layer)]
        for i in range(1, num_layers):
            layers.append(cv2.GaussianBlur(layers[-1], (0, 0), sigmas[i], borderType=cv2.BORDER_REFLECT_101))
        pyramid.append(np.stack(layers))
    return pyramid


def build_dog_pyramid(gaussian_pyramid: list[np.ndarray]) -> list[np.ndarray]:
    """Return the DoG layers (layer i + 1 minus layer i) of every octave, float32 grey levels."""
    return [np.diff(layers, axis=0) for layers in gaussian_pyramid]


@dataclasses.dataclass(frozen=True)
class Candidates:
    """Discrete DoG extrema: parallel int/float arrays of equal length.

    Attributes:
      octave, layer, row, col: position in the DoG pyramid (layer 1..num_octave_layers).
      value: DoG value there, grey levels; positive for maxima, negative for minima.
    """

    octave: np.ndarray
    layer: np.ndarray
    row: np.ndarray
    col: np.ndarray
    value: np.ndarray

    def __len__(self) -> int:
        return len(self.octave)

    def select(self, mask_or_indices) -> "Candidates":
        """Return the candidates at a boolean mask or index array."""
        return Candidates(*(field[mask_or_indices] for field in dataclasses.astuple(self)))


def find_candidates(dog_pyramid: list[np.ndarray], parameters: SiftParameters = DEFAULT_PARAMETERS) -> Candidates:
    """Find the discrete DoG extrema that OpenCV's SIFT refines into keypoints.

    A candidate is a pixel of layers 1..num_octave_layers, at least IMAGE_BORDER pixels
    from the border, whose |value| exceeds `candidate_threshold` and which is >= all 26
    neighbours (positive values) or <= all of them (negative values), ties included.
    """
    threshold = parameters.candidate_threshold
    fields = {name: [] for name in ("octave", "layer", "row", "col", "value")}
    for octave, dog in enumerate(dog_pyramid):
        rows, cols = dog.shape[1:]
        if rows <= 2 * IMAGE_BORDER or cols <= 2 * IMAGE_BORDER:
            continue
        # 3x3 maxima/minima within each layer, then across the neighbouring layers.
        square = np.ones((3, 3), np.uint8)
        spatial_max = [cv2.dilate(layer, square, borderType=cv2.BORDER_REPLICATE) for layer in dog]
        spatial_min = [cv2.erode(layer, square, borderType=cv2.BORDER_REPLICATE) for layer in dog]
        for layer in range(1, parameters.num_octave_layers + 1):
            values = dog[layer]
            maxima = np.maximum(np.maximum(spatial_max[layer - 1], spatial_max[layer]), spatial_max[layer + 1])
            minima = np.minimum(np.minimum(spatial_min[layer - 1], spatial_min[layer]), spatial_min[layer + 1])
            is_extremum = ((values > threshold) & (values >= maxima)) | ((values < -threshold) & (values <= minima))
            interior = is_extremum[IMAGE_BORDER : rows - IMAGE_BORDER, IMAGE_BORDER : cols - IMAGE_BORDER]
            found_rows, found_cols = np.nonzero(interior)
            found_rows += IMAGE_BORDER
            found_cols += IMAGE_BORDER
            fields["octave"].append(np.full(len(found_rows), octave))
            fields["layer"].append(np.full(len(found_rows), layer))
            fields["row"].append(found_rows)
            fields["col"].append(found_cols)
            fields["value"].append(values[found_rows, found_cols])
    return Candidates(
        octave=np.concatenate(fields["octave"]).astype(np.int64),
        layer=np.concatenate(fields["layer"]).astype(np.int64),
        row=np.concatenate(fields["row"]).astype(np.int64),
        col=np.concatenate(fields["col"]).astype(np.int64),
        value=np.concatenate(fields["value"]).astype(np.float32),
    )


@dataclasses.dataclass(frozen=True)
class RefinedCandidates:
    """Candidates after OpenCV's sub-pixel refinement, one entry per input candidate.

    Attributes:
      accepted: bool, the candidate becomes a keypoint (converged, contrast, edge tests).
      layer, row, col: discrete position where the refinement converged.
      offset: (n, 3) sub-pixel offset (layer, row, col), each in (-0.5, 0.5) when accepted.
      contrast: interpolated DoG value at the refined position, grey levels.
    """

    accepted: np.ndarray
    layer: np.ndarray
    row: np.ndarray
    col: np.ndarray
    offset: np.ndarray
    contrast: np.ndarray


def refine_candidates(
    dog_pyramid: list[np.ndarray], candidates: Candidates, parameters: SiftParameters = DEFAULT_PARAMETERS
) -> RefinedCandidates:
    """Replicate OpenCV's `adjustLocalExtrema` for all candidates at once.

    Each step fits a quadratic to the 3x3x3 DoG neighbourhood (central differences),
    moves to the neighbouring pixel when an offset reaches 0.5, and gives up after
    MAX_REFINEMENT_STEPS steps or when it leaves the searchable layers or the border.
    Accepted candidates have |interpolated DoG| >= contrast_threshold_grey_levels and
    a principal-curvature ratio below edge_threshold.
    """
    count = len(candidates)
    layer = candidates.layer.copy()
    row = candidates.row.copy()
    col = candidates.col.copy()
    offset = np.zeros((count, 3))
    alive = np.ones(count, dtype=bool)
    converged = np.zeros(count, dtype=bool)
    shapes = np.array([dog.shape[1:] for dog in dog_pyramid])
    rows_limit = shapes[candidates.octave, 0] - IMAGE_BORDER
    cols_limit = shapes[candidates.octave, 1] - IMAGE_BORDER

    def neighbourhood(indices):
        """Return (len(indices), 3, 3, 3) DoG values around the current positions."""
        cube = np.empty((len(indices), 3, 3, 3))
        for octave in np.unique(candidates.octave[indices]):
            members = indices[candidates.octave[indices] == octave]
            where = np.searchsorted(indices, members)
            d_layer, d_row, d_col = np.meshgrid([-1, 0, 1], [-1, 0, 1], [-1, 0, 1], indexing="ij")
            cube[where] = dog_pyramid[octave][
                layer[members, None, None, None] + d_layer,
                row[members, None, None, None] + d_row,
                col[members, None, None, None] + d_col,
            ]
        return cube

    def derivatives(cube):
        """Gradient (layer, row, col order) and Hessian of a quadratic fit, per grey level."""
        gradient = 0.5 * np.stack(
            [cube[:, 2, 1, 1] - cube[:, 0, 1, 1], cube[:, 1, 2, 1] - cube[:, 1, 0, 1], cube[:, 1, 1, 2] - cube[:, 1, 1, 0]],
            axis=1,
        )
        center2 = 2.0 * cube[:, 1, 1, 1]
        d_ss = cube[:, 2, 1, 1] + cube[:, 0, 1, 1] - center2
        d_rr = cube[:, 1, 2, 1] + cube[:, 1, 0, 1] - center2
        d_cc = cube[:, 1, 1, 2] + cube[:, 1, 1, 0] - center2
        d_sr = 0.25 * (cube[:, 2, 2, 1] - cube[:, 2, 0, 1] - cube[:, 0, 2, 1] + cube[:, 0, 0, 1])
        d_sc = 0.25 * (cube[:, 2, 1, 2] - cube[:, 2, 1, 0] - cube[:, 0, 1, 2] + cube[:, 0, 1, 0])
        d_rc = 0.25 * (cube[:, 1, 2, 2] - cube[:, 1, 2, 0] - cube[:, 1, 0, 2] + cube[:, 1, 0, 0])
        hessian = np.stack(
            [np.stack([d_ss, d_sr, d_sc], -1), np.stack([d_sr, d_rr, d_rc], -1), np.stack([d_sc, d_rc, d_cc], -1)],
            axis=1,
        )
        return gradient, hessian

    for _ in range(MAX_REFINEMENT_STEPS):
        active = np.nonzero(alive & ~converged)[0]
        if len(active) == 0:
            break
        gradient, hessian = derivatives(neighbourhood(active))
        singular = np.abs(np.linalg.det(hessian)) < 1e-12
        step = np.zeros_like(gradient)
        solvable = ~singular
        step[solvable] = -np.linalg.solve(hessian[solvable], gradient[solvable][..., None])[..., 0]
        alive[active[singular]] = False
        offset[active] = step
        done = np.all(np.abs(step) < 0.5, axis=1) & solvable
        converged[active[done]] = True
        moving = active[~done & solvable]
        move = np.rint(offset[moving]).astype(np.int64)
        layer[moving] += move[:, 0]
        row[moving] += move[:, 1]
        col[moving] += move[:, 2]
        out_of_range = (
            (layer[moving] < 1)
            | (layer[moving] > parameters.num_octave_layers)
            | (row[moving] < IMAGE_BORDER)
            | (row[moving] >= rows_limit[moving])
            | (col[moving] < IMAGE_BORDER)
            | (col[moving] >= cols_limit[moving])
        )
        alive[moving[out_of_range]] = False

    accepted = alive & converged
    contrast = np.zeros(count)
    final = np.nonzero(accepted)[0]
    if len(final):
        cube = neighbourhood(final)
        gradient, hessian = derivatives(cube)
        contrast[final] = cube[:, 1, 1, 1] + 0.5 * np.sum(gradient * offset[final], axis=1)
        strong = np.abs(contrast[final]) >= parameters.contrast_threshold_grey_levels
        trace = hessian[:, 1, 1] + hessian[:, 2, 2]
        determinant = hessian[:, 1, 1] * hessian[:, 2, 2] - hessian[:, 1, 2] ** 2
        edge = parameters.edge_threshold
        not_edge = (determinant > 0) & (trace**2 * edge < (edge + 1) ** 2 * determinant)
        accepted[final] = strong & not_edge
    return RefinedCandidates(accepted=accepted, layer=layer, row=row, col=col, offset=offset, contrast=contrast)


@dataclasses.dataclass(frozen=True)
class Keypoints:
    """SIFT keypoints as parallel arrays, positions in pixels of the original image.

    Attributes:
      x, y: position (float64), OpenCV convention (pixel centres at integers).
      size: OpenCV keypoint size, twice the scale sigma, in pixels.
      angle: orientation in degrees.
      response: |interpolated DoG| as OpenCV reports it (0..1 image scale).
      octave: pyramid octave, 0 for the upsampled one (OpenCV's octave byte + 1).
      layer: DoG layer 1..num_octave_layers where the keypoint was refined.
      row, col: discrete DoG position in that octave.
    """

    x: np.ndarray
    y: np.ndarray
    size: np.ndarray
    angle: np.ndarray
    response: np.ndarray
    octave: np.ndarray
    layer: np.ndarray
    row: np.ndarray
    col: np.ndarray

    def __len__(self) -> int:
        return len(self.x)

    def select(self, mask_or_indices) -> "Keypoints":
        """Return the keypoints at a boolean mask or index array."""
        return Keypoints(*(field[mask_or_indices] for field in dataclasses.astuple(self)))

    def unique_locations(self) -> "Keypoints":
        """Drop keypoints that repeat a (octave, layer, row, col) with another orientation."""
        if len(self) == 0:
            return self
        keys = np.stack([self.octave, self.layer, self.row, self.col], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        return self.select(np.sort(first))

    @staticmethod
    def from_cv2(keypoints) -> "Keypoints":
        """Unpack OpenCV SIFT keypoints detected with the x2 upsampling (first octave -1)."""
        count = len(keypoints)
        x = np.array([kp.pt[0] for kp in keypoints], dtype=np.float64).reshape(count)
        y = np.array([kp.pt[1] for kp in keypoints], dtype=np.float64).reshape(count)
        packed = np.array([kp.octave for kp in keypoints], dtype=np.int64).reshape(count)
        octave_byte = packed & 255
        octave = np.where(octave_byte < 128, octave_byte, octave_byte - 256) + 1
        layer = (packed >> 8) & 255
        # OpenCV stores pt = (col + sub-pixel offset) * 2^octave / 2 with |offset| < 0.5.
        scale = 2.0 ** (octave - 1)
        return Keypoints(
            x=x,
            y=y,
            size=np.array([kp.size for kp in keypoints], dtype=np.float64).reshape(count),
            angle=np.array([kp.angle for kp in keypoints], dtype=np.float64).reshape(count),
            response=np.array([kp.response for kp in keypoints], dtype=np.float64).reshape(count),
            octave=octave,
            layer=layer,
            row=np.rint(y / scale).astype(np.int64),
            col=np.rint(x / scale).astype(np.int64),
        )


def detect_keypoints(grey_uint8: np.ndarray, parameters: SiftParameters = DEFAULT_PARAMETERS) -> Keypoints:
    """Detect SIFT keypoints with OpenCV.

    Args:
      grey_uint8: uint8 grey image (H, W).
      parameters: detector settings.

    Returns:
      The keypoints, one entry per orientation as OpenCV returns them.
    """
    check_grey_image(grey_uint8)
    if grey_uint8.dtype != np.uint8:
        raise ValueError(f"Invalid grey image dtype {grey_uint8.dtype}: cv2.SIFT needs uint8; quantize it first.")
    return Keypoints.from_cv2(parameters.create_detector().detect(grey_uint8, None))


def trace_to_candidates(
    keypoints: Keypoints, candidates: Candidates, refined: RefinedCandidates
) -> np.ndarray:
    """Find the discrete extremum each keypoint was refined from.

    A keypoint's source is the candidate whose refinement converged to the keypoint's
    (octave, layer, row, col). When no candidate converged there (a float32 versus
    fixed-point difference near a threshold), the nearest candidate of the same octave
    within one pixel and one layer is used.

    Returns:
      int array (len(keypoints),): candidate index, or -1 when none is close enough.
    """
    sources = np.full(len(keypoints), -1, dtype=np.int64)
    if len(candidates) == 0 or len(keypoints) == 0:
        return sources
    refined_keys = {}
    for index in np.nonzero(refined.accepted)[0]:
        key = (candidates.octave[index], refined.layer[index], refined.row[index], refined.col[index])
        refined_keys.setdefault(key, index)
    discrete_keys = {}
    for index in range(len(candidates)):
        key = (candidates.octave[index], candidates.layer[index], candidates.row[index], candidates.col[index])
        discrete_keys.setdefault(key, index)
    for i in range(len(keypoints)):
        octave, layer, row, col = (
            int(keypoints.octave[i]), int(keypoints.layer[i]), int(keypoints.row[i]), int(keypoints.col[i])
        )
        found = refined_keys.get((octave, layer, row, col), -1)
        if found < 0:
            found = discrete_keys.get((octave, layer, row, col), -1)
        if found < 0:
            for d_layer, d_row, d_col in _NEIGHBOUR_OFFSETS:
                found = discrete_keys.get((octave, layer + d_layer, row + d_row, col + d_col), -1)
                if found >= 0:
                    break
        sources[i] = found
    return sources


# The 26 neighbours of a DoG pixel, nearest (face neighbours) first.
_NEIGHBOUR_OFFSETS = sorted(
    [
        (d_layer, d_row, d_col)
        for d_layer in (-1, 0, 1)
        for d_row in (-1, 0, 1)
        for d_col in (-1, 0, 1)
        if (d_layer, d_row, d_col) != (0, 0, 0)
    ],
    key=lambda offset: sum(abs(value) for value in offset),
)
