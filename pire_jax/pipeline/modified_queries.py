"""Apply a non-neural query modification (keypoint attack or Gaussian noise) to a set of queries, with resume.

Each query is modified on its own, saved atomically, and recorded as finished with the
modification's report. A query that fails is logged and reported, and the others
still finish.
"""

import time
from typing import Any, Sequence

import numpy as np
from absl import logging

from pire_jax import images as images_lib
from pire_jax.attacks.keypoints import registry
from pire_jax.pipeline.adversarial_store import AdversarialStore
from pire_jax.pipeline.pire_queries import PreparedQuery


def query_seed(seed: int, query_index: int) -> int:
    """Seed of one query's modification, derived from the run seed and the query's dataset index."""
    return int(np.random.SeedSequence([seed, query_index]).generate_state(1)[0])


def modify_queries(
    name: str,
    queries: Sequence[PreparedQuery],
    config: Any,
    store: AdversarialStore,
    seed: int,
    jpeg_quality: int = 95,
) -> dict[str, Any]:
    """Modify every unfinished query with `registry.apply_query_modification(name, ...)` and save it.

    Args:
      name: one of `registry.QUERY_MODIFICATIONS`.
      queries: the queries; finished ones (per `store`) are skipped.
      config: the modification's settings, a dict of overrides or None for defaults.
      store: output layout with a single step.
      seed: run seed; each query gets `query_seed(seed, index)`.
      jpeg_quality: JPEG quality when the store saves JPEG.

    Returns:
      {"attacked": names, "skipped": names, "failed": [{"query", "error"}]}.
    """
    if len(store.steps) != 1:
        raise ValueError(f"A {name} run keeps one output per query, but the store has steps {store.steps}.")
    step = store.final_step
    attacked, skipped, failed = [], [], []
    for position, query in enumerate(queries):
        if store.is_finished(query.name):
            skipped.append(query.name)
            continue
        start = time.perf_counter()
        try:
            modified, report = registry.apply_query_modification(name, query.image, config, query_seed(seed, query.index))
        except (ValueError, RuntimeError, np.linalg.LinAlgError) as error:
            logging.error("Query %s: %s failed: %s", query.name, name, error)
            failed.append({"query": query.name, "error": f"{name} failed: {error}"})
            continue
        images_lib.save_image(store.image_path(query.name, step), modified, store.save_format, jpeg_quality)
        report["seconds"] = time.perf_counter() - start
        store.mark_finished(query.name, {"query": query.name, "shape": list(query.image.shape), "report": report,
                                         "seconds": report["seconds"]})
        attacked.append(query.name)
        logging.info("%s: %d/%d queries done (%s in %.1f s).", name, position + 1, len(queries), query.name,
                     report["seconds"])
    return {"attacked": attacked, "skipped": skipped, "failed": failed}
