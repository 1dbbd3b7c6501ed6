"""Descriptor extraction for lists of images: crop, resize, convert, batch by shape, run the jitted network.

The steps follow cirtorch's `extract_vectors`: crop a query to its bounding box,
downscale so the long side is at most `image_size` (PIL thumbnail), normalise with
the network's input convention, and compute single- or multi-scale descriptors. A
learned whitening is applied afterwards when requested.
"""

import dataclasses
import functools
import time
from typing import Any, Iterable, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from absl import logging

from pire_jax import images as image_utils
from pire_jax.descriptors.multiscale import MULTI_SCALES, SINGLE_SCALE, compute_descriptors
from pire_jax.models.retrieval_network import NetworkSpec, RetrievalNetwork

DEFAULT_IMAGE_SIZE = 1024  # cirtorch's default maximum image side for extraction.
LOG_EVERY_IMAGES = 100
# Prepared images waiting for a full batch, in multiples of the batch size. Past this,
# the largest waiting group runs early, so that datasets with many distinct image
# shapes do not keep every prepared image in memory until the end.
MAX_PENDING_BATCHES = 4


@dataclasses.dataclass(frozen=True)
class ExtractionConfig:
    """Settings of descriptor extraction.

    Attributes:
      image_size: maximum long side in pixels after downscaling; images are never
        upscaled. None keeps the native resolution.
      scales: resize factors of the network input; (1.0,) is single-scale and
        `MULTI_SCALES` is cirtorch's multi-scale setting.
      learned_whitening: apply the network's learned whitening (cirtorch `meta['Lw']`,
        'ss' or 'ms' according to `scales`) after extraction.
      batch_size: maximum number of equally shaped images per forward pass.
    """

    image_size: int | None = DEFAULT_IMAGE_SIZE
    scales: tuple[float, ...] = SINGLE_SCALE
    learned_whitening: bool = False
    batch_size: int = 8

    def __post_init__(self):
        if self.image_size is not None and self.image_size < 1:
            raise ValueError(f"Invalid image_size {self.image_size}; expected a positive number of pixels or None.")
        if not self.scales or min(self.scales) <= 0:
            raise ValueError(f"Invalid scales {self.scales}; expected positive factors, e.g. {MULTI_SCALES}.")
        if self.batch_size < 1:
            raise ValueError(f"Invalid batch_size {self.batch_size}; expected at least 1.")

    @property
    def multiscale(self) -> bool:
        return len(self.scales) > 1


def prepare_image(image: np.ndarray, box: Sequence[float] | None, image_size: int | None) -> np.ndarray:
    """Crop an image to `box` (if given) and downscale its long side to `image_size`, as cirtorch does for queries.

    Args:
      image: uint8 (H, W, 3) RGB.
      box: [x1, y1, x2, y2] in pixels, or None for the whole image.
      image_size: maximum long side, or None.

    Returns:
      uint8 (H', W', 3).
    """
    image_utils.check_uint8_image(image)
    if box is not None:
        image = image_utils.crop_to_box(image, box)
    return image_utils.resize_long_side(image, image_size)


@functools.partial(jax.jit, static_argnames=("spec", "scales"))
def _describe_uint8_batch(params: Any, batch: jnp.ndarray, spec: NetworkSpec, scales: tuple[float, ...]) -> jnp.ndarray:
    network_input = spec.input_convention.to_network_input(batch)
    return compute_descriptors(spec, params, network_input, scales)


# (spec, scales, batch shape) triples already compiled in this process, to log each new one once.
_COMPILED: set[tuple[NetworkSpec, tuple[float, ...], tuple[int, ...]]] = set()


def _run_batch(network: RetrievalNetwork, batch: np.ndarray, scales: tuple[float, ...]) -> np.ndarray:
    key = (network.spec, scales, batch.shape)
    if key not in _COMPILED:
        logging.info(
            "Compiling %s descriptor extraction for batch shape %s at scales %s.", network.arch, batch.shape, scales
        )
        _COMPILED.add(key)
    return np.asarray(_describe_uint8_batch(network.params, jnp.asarray(batch), network.spec, scales))


def _split_power_of_two(entries: list) -> Iterator[list]:
    """Split a list into consecutive parts of decreasing power-of-two lengths (7 -> 4, 2, 1).

    Leftover batches then reuse few compiled batch sizes.
    """
    start = 0
    remaining = len(entries)
    while remaining:
        size = 1 << (remaining.bit_length() - 1)
        yield entries[start : start + size]
        start += size
        remaining -= size


def group_by_shape(
    prepared_images: Iterable[tuple[int, np.ndarray]], batch_size: int
) -> Iterator[list[tuple[int, np.ndarray]]]:
    """Group (index, image) pairs into batches of equally shaped images.

    A shape's batch is yielded as soon as it has `batch_size` images. The images left
    at the end are yielded in power-of-two parts. When more than
    MAX_PENDING_BATCHES * batch_size images wait, the largest waiting group is
    yielded early, which bounds memory when most shapes are distinct.

    Yields:
      Lists of 1..batch_size (index, image) pairs whose images have one shape.
    """
    pending: dict[tuple[int, ...], list[tuple[int, np.ndarray]]] = {}
    pending_count = 0
    for index, image in prepared_images:
        bucket = pending.setdefault(image.shape, [])
        bucket.append((index, image))
        pending_count += 1
        if len(bucket) == batch_size:
            pending_count -= batch_size
            yield pending.pop(image.shape)
        elif pending_count > MAX_PENDING_BATCHES * batch_size:
            largest = max(pending, key=lambda shape: len(pending[shape]))
            pending_count -= len(pending[largest])
            yield from _split_power_of_two(pending.pop(largest))

    for shape in list(pending):
        yield from _split_power_of_two(pending.pop(shape))


def _prepare_all(
    images: Sequence[np.ndarray], boxes: Sequence[Sequence[float] | None] | None, image_size: int | None
) -> Iterator[tuple[int, np.ndarray]]:
    for index, image in enumerate(images):
        box = None if boxes is None else boxes[index]
        yield index, prepare_image(image, box, image_size)


def extract_descriptors(
    network: RetrievalNetwork,
    images: Sequence[np.ndarray],
    boxes: Sequence[Sequence[float] | None] | None = None,
    config: ExtractionConfig = ExtractionConfig(),
) -> np.ndarray:
    """Compute the descriptor of every image.

    Images of equal shape after resizing run together in batches of up to
    `config.batch_size`. Each new batch shape compiles once per process, and the
    persistent compilation cache (`pire_jax.jax_cache`, when enabled) keeps it across runs.

    Args:
      network: the retrieval network.
      images: uint8 RGB arrays (H, W, 3), of any shapes.
      boxes: per image, a bounding box [x1, y1, x2, y2] in pixels to crop to, or None.
      config: extraction settings.

    Returns:
      float32 array (len(images), D), one L2-normalised descriptor per row. D is the
      network's descriptor_dim, or the output size of the learned whitening.
    """
    if boxes is not None and len(boxes) != len(images):
        raise ValueError(f"Got {len(boxes)} boxes for {len(images)} images; pass one box (or None) per image.")
    whitening = None
    if config.learned_whitening:
        if network.learned_whitening is None:
            raise ValueError(
                f"Learned whitening requested, but the {network.arch} network has none; convert a cirtorch "
                "checkpoint with meta['Lw'] or turn learned whitening off."
            )
        whitening = network.learned_whitening.for_extraction(config.multiscale)

    if len(images) == 0:
        output_dim = whitening.projection.shape[0] if whitening is not None else network.descriptor_dim
        return np.zeros((0, output_dim), np.float32)

    scales = tuple(float(scale) for scale in config.scales)
    # Queries are often described one at a time; logging each would drown the run's log.
    level = logging.INFO if len(images) > 1 else logging.DEBUG
    logging.log(
        level,
        "Extracting %s descriptors of %d images (image_size=%s, scales=%s, learned whitening=%s).",
        network.arch,
        len(images),
        config.image_size,
        scales,
        config.learned_whitening,
    )
    started = time.monotonic()
    descriptors: list[np.ndarray | None] = [None] * len(images)
    done = 0
    for entries in group_by_shape(_prepare_all(images, boxes, config.image_size), config.batch_size):
        batch = np.stack([prepared for _, prepared in entries])
        for (index, _), descriptor in zip(entries, _run_batch(network, batch, scales)):
            descriptors[index] = descriptor

        previous = done
        done += len(entries)
        if done // LOG_EVERY_IMAGES > previous // LOG_EVERY_IMAGES or done == len(images):
            logging.log(level, "Described %d/%d images in %.1f s.", done, len(images), time.monotonic() - started)

    stacked = np.stack(descriptors).astype(np.float32)
    if whitening is not None:
        stacked = np.asarray(whitening.apply(jnp.asarray(stacked)), np.float32)
    return stacked
