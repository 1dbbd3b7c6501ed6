"""GeM descriptor extraction: single- and multi-scale, batched by image shape, with optional learned whitening."""

from pire_jax.descriptors.extraction import (
    DEFAULT_IMAGE_SIZE,
    ExtractionConfig,
    extract_descriptors,
    group_by_shape,
    prepare_image,
)
from pire_jax.descriptors.multiscale import MULTI_SCALES, SINGLE_SCALE, compute_descriptors

__all__ = [
    "DEFAULT_IMAGE_SIZE",
    "MULTI_SCALES",
    "SINGLE_SCALE",
    "ExtractionConfig",
    "compute_descriptors",
    "extract_descriptors",
    "group_by_shape",
    "prepare_image",
]
