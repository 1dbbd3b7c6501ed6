"""The neural retrieval system: GeM descriptors of a converted network, ranked by inner product.

Registered as "neural": `make_system("neural", weights=PATH, image_size=1024,
multiscale=False, learned_whitening=False)`.
"""

import os
from typing import Any, Sequence

import numpy as np

from pire_jax.descriptors import MULTI_SCALES, SINGLE_SCALE, ExtractionConfig, extract_descriptors
from pire_jax.jax_cache import enable_persistent_compilation_cache
from pire_jax.models import load_network
from pire_jax.retrieval.system import rank_by_similarity, register_system


class NeuralSystem:
    """GeM retrieval (Radenović et al., TPAMI 2018) with a network file written by `weights_conversion`.

    Args:
      weights: converted network file (`pire_jax.models.load_network`).
      image_size: maximum long side in pixels for database images and queries
        (downscale only); None keeps the native resolution.
      multiscale: use cirtorch's scales (1, 1/sqrt(2), 1/2) instead of a single scale.
      learned_whitening: apply the network's learned whitening (cirtorch meta['Lw']).
      batch_size: maximum number of equally shaped images per forward pass.
    """

    name = "neural"

    def __init__(
        self,
        weights: str,
        image_size: int | None = 1024,
        multiscale: bool = False,
        learned_whitening: bool = False,
        batch_size: int = 8,
    ):
        enable_persistent_compilation_cache()
        self.weights = os.fspath(weights)
        self.network = load_network(self.weights)
        if learned_whitening:
            if self.network.learned_whitening is None:
                raise ValueError(
                    f"learned_whitening=True, but {self.weights} has no learned whitening; convert a cirtorch "
                    "checkpoint with meta['Lw'] or set learned_whitening=False."
                )
            self.network.learned_whitening.for_extraction(multiscale)  # Raises if the 'ss'/'ms' part is missing.
        self.config = ExtractionConfig(
            image_size=image_size,
            scales=MULTI_SCALES if multiscale else SINGLE_SCALE,
            learned_whitening=learned_whitening,
            batch_size=batch_size,
        )

    def settings(self) -> dict[str, Any]:
        """Return the settings that change descriptors, including the sha256 of the weights file."""
        whitening_name = None
        if self.config.learned_whitening:
            whitening_name = self.network.learned_whitening.name
        return {
            "system": self.name,
            "arch": self.network.arch,
            "weights_file": os.path.basename(self.weights),
            "weights_sha256": self.network.checkpoint_sha256,
            "image_size": self.config.image_size,
            "scales": list(self.config.scales),
            "learned_whitening": self.config.learned_whitening,
            "learned_whitening_set": whitening_name,
        }

    def describe_database(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Compute one float32 descriptor (D,) per uint8 RGB image."""
        return list(extract_descriptors(self.network, images, config=self.config))

    def describe_query(self, image: np.ndarray, box: Sequence[float] | None) -> np.ndarray:
        """Compute the float32 descriptor (D,) of a query, cropped to `box` first when given (as cirtorch does)."""
        return extract_descriptors(self.network, [image], boxes=[box], config=self.config)[0]

    def rank(self, query_descriptors: Sequence[np.ndarray], database_descriptors: Sequence[np.ndarray]) -> np.ndarray:
        """Rank the database by decreasing inner product; returns int (n_database, n_queries)."""
        return rank_by_similarity(np.stack(query_descriptors), np.stack(database_descriptors))


register_system(NeuralSystem.name, NeuralSystem)
