"""CEDD and GIST as RetrievalSystems: one global vector per image, bounding-box queries cropped.

CEDD ranks by Tanimoto similarity (LIRE's measure for CEDD), GIST by Euclidean
distance. Images are described at their native resolution unless the configuration
sets a maximum size (CEDD) or a working size (GIST, 256x256 by default).
"""

import dataclasses
from typing import Any, Sequence

import numpy as np

from pire_jax import images
from pire_jax.global_features import cedd, gist
from pire_jax.retrieval import system as system_lib


def _crop_query(image: np.ndarray, box: Sequence[float] | None) -> np.ndarray:
    images.check_uint8_image(image, "query image")
    return image if box is None else images.crop_to_box(image, box)


def _stack(descriptors: Sequence[np.ndarray], dimension: int, label: str) -> np.ndarray:
    stacked = np.stack([np.asarray(descriptor) for descriptor in descriptors]) if len(descriptors) else None
    if stacked is None or stacked.ndim != 2 or stacked.shape[1] != dimension:
        shape = None if stacked is None else stacked.shape
        raise ValueError(f"Invalid {label} descriptors of shape {shape}; expected (n, {dimension}) with n >= 1.")
    return stacked


class CeddSystem:
    """CEDD (144 bins, 3 bits each) with Tanimoto similarity."""

    name = "cedd"

    def __init__(self, config: cedd.CeddConfig = cedd.CeddConfig()):
        self.config = config

    def settings(self) -> dict[str, Any]:
        """Return the CEDD settings (all of them change the descriptors)."""
        return dataclasses.asdict(self.config)

    def empty_descriptor(self) -> np.ndarray:
        """Return the histogram used for an unreadable image; its Tanimoto similarity to any real image is 0."""
        return np.zeros(cedd.HISTOGRAM_BINS, np.uint8)

    def describe_database(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Compute one uint8 (144,) histogram per image."""
        return [cedd.cedd_histogram(image, self.config) for image in images]

    def describe_query(self, image: np.ndarray, box: Sequence[float] | None) -> np.ndarray:
        """Compute the histogram of the query, cropped to `box` when given."""
        return cedd.cedd_histogram(_crop_query(image, box), self.config)

    def rank(self, query_descriptors: Sequence[np.ndarray], database_descriptors: Sequence[np.ndarray]) -> np.ndarray:
        """Rank by decreasing Tanimoto similarity; int64 (n_database, n_queries), ties in database order."""
        similarity = cedd.tanimoto_similarity(
            _stack(query_descriptors, cedd.HISTOGRAM_BINS, "CEDD query"),
            _stack(database_descriptors, cedd.HISTOGRAM_BINS, "CEDD database"),
        )
        return np.argsort(-similarity, axis=0, kind="stable")


class GistSystem:
    """GIST (512-d grey or 960-d colour) with Euclidean distance."""

    name = "gist"

    def __init__(self, config: gist.GistConfig = gist.GistConfig()):
        self.config = config
        self._extractor = gist.GistExtractor(config)

    def settings(self) -> dict[str, Any]:
        """Return the GIST settings with the orientations resolved (all of them change the descriptors)."""
        settings = dataclasses.asdict(self.config)
        settings["orientations_per_scale"] = list(self.config.orientations)
        return settings

    def describe_database(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Compute one float32 GIST vector per image."""
        return [self._extractor(image) for image in images]

    def describe_query(self, image: np.ndarray, box: Sequence[float] | None) -> np.ndarray:
        """Compute the GIST of the query, cropped to `box` when given."""
        return self._extractor(_crop_query(image, box))

    def rank(self, query_descriptors: Sequence[np.ndarray], database_descriptors: Sequence[np.ndarray]) -> np.ndarray:
        """Rank by increasing Euclidean distance; int64 (n_database, n_queries)."""
        dimension = self.config.dimension
        return system_lib.rank_by_distance(
            _stack(query_descriptors, dimension, "GIST query"), _stack(database_descriptors, dimension, "GIST database")
        )


system_lib.register_system("cedd", CeddSystem)
system_lib.register_system("gist", GistSystem)
