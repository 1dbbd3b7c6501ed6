"""The interface every retrieval system implements, and the registry that builds them by name.

A retrieval system turns uint8 RGB images into descriptors and ranks a background
collection for a set of queries. The neural (GeM), SIFT bag-of-words with Hamming
Embedding, CEDD and GIST systems all implement `RetrievalSystem`, so experiment
binaries choose one with `--system` and never special-case it.
"""

from typing import Any, Callable, Protocol, Sequence

import numpy as np


class RetrievalSystem(Protocol):
    """A content-based image retrieval system.

    Attributes:
      name: registry name, e.g. "neural", "sift_he", "cedd", "gist".
    """

    name: str

    def settings(self) -> dict[str, Any]:
        """Return every setting that changes the database descriptors, as JSON-serialisable values.

        The feature cache keys on these, so a changed setting never reuses stale
        descriptors.
        """

    def describe_database(self, images: Sequence[np.ndarray]) -> list[Any]:
        """Compute one descriptor per database image.

        Args:
          images: uint8 RGB arrays (H, W, 3), possibly of different shapes.

        Returns:
          One descriptor per image, of the system's own type.
        """

    def describe_query(self, image: np.ndarray, box: Sequence[float] | None) -> Any:
        """Compute the descriptor of a query.

        Args:
          image: uint8 RGB array (H, W, 3), the whole query image.
          box: bounding box [x1, y1, x2, y2] in pixels for a bounding-box query, or
            None for a whole-image query. Global systems crop to it; local systems
            may instead keep only the features inside it.
        """

    def rank(self, query_descriptors: Sequence[Any], database_descriptors: Sequence[Any]) -> np.ndarray:
        """Rank the database for each query, most similar first.

        Returns:
          int array of shape (n_database, n_queries): column q lists database indices
          in decreasing similarity to query q (the revisitop `ranks` layout).
        """


SystemFactory = Callable[..., RetrievalSystem]

_FACTORIES: dict[str, SystemFactory] = {}


def register_system(name: str, factory: SystemFactory) -> None:
    """Make `make_system(name, ...)` call `factory`."""
    if name in _FACTORIES and _FACTORIES[name] is not factory:
        raise ValueError(f"Retrieval system {name!r} is already registered.")
    _FACTORIES[name] = factory


def make_system(name: str, **options: Any) -> RetrievalSystem:
    """Build a registered retrieval system.

    Args:
      name: one of `available_systems()`.
      **options: keyword arguments of that system's factory.
    """
    # Importing the package registers the built-in systems.
    import pire_jax.retrieval  # noqa: F401  pylint: disable=import-outside-toplevel

    if name not in _FACTORIES:
        raise ValueError(f"Unknown retrieval system {name!r}; expected one of {sorted(_FACTORIES)}.")
    return _FACTORIES[name](**options)


def available_systems() -> list[str]:
    """Return the names of the registered retrieval systems."""
    import pire_jax.retrieval  # noqa: F401  pylint: disable=import-outside-toplevel

    return sorted(_FACTORIES)


def rank_by_similarity(query_vectors: np.ndarray, database_vectors: np.ndarray) -> np.ndarray:
    """Rank database vectors by decreasing similarity (inner product) to each query.

    Args:
      query_vectors: float array (n_queries, dim).
      database_vectors: float array (n_database, dim).

    Returns:
      int64 array (n_database, n_queries), most similar first. Ties keep database order.
    """
    if query_vectors.ndim != 2 or database_vectors.ndim != 2 or query_vectors.shape[1] != database_vectors.shape[1]:
        raise ValueError(
            f"Invalid descriptor shapes: queries {query_vectors.shape}, database {database_vectors.shape}; "
            "expected (n, dim) with the same dim."
        )
    similarity = database_vectors.astype(np.float64) @ query_vectors.astype(np.float64).T
    return np.argsort(-similarity, axis=0, kind="stable")


def rank_by_distance(query_vectors: np.ndarray, database_vectors: np.ndarray) -> np.ndarray:
    """Rank database vectors by increasing Euclidean distance to each query (same layout as `rank_by_similarity`)."""
    if query_vectors.ndim != 2 or database_vectors.ndim != 2 or query_vectors.shape[1] != database_vectors.shape[1]:
        raise ValueError(
            f"Invalid descriptor shapes: queries {query_vectors.shape}, database {database_vectors.shape}; "
            "expected (n, dim) with the same dim."
        )
    queries = query_vectors.astype(np.float64)
    database = database_vectors.astype(np.float64)
    squared = (database**2).sum(1)[:, None] - 2.0 * database @ queries.T + (queries**2).sum(1)[None, :]
    return np.argsort(squared, axis=0, kind="stable")
