"""Retrieval systems behind one interface (`RetrievalSystem`) and a registry (`make_system`).

Importing this package registers the built-in systems.
"""

from pire_jax.retrieval.system import (
    RetrievalSystem,
    available_systems,
    make_system,
    rank_by_distance,
    rank_by_similarity,
    register_system,
)

# Built-in systems register themselves on import (one line each).
from pire_jax.retrieval import global_systems, sift_he_system  # noqa: E402,F401  (registers cedd, gist, sift_he, bow)
from pire_jax.retrieval import neural_system  # noqa: E402,F401  (registers neural)
