"""Reading a dataset's queries into the exact uint8 images that are attacked and evaluated."""

from typing import Any

from absl import logging

from pire_jax import images
from pire_jax.datasets import RetrievalDataset
from pire_jax.pipeline.pire_queries import PreparedQuery


def prepare_queries(
    dataset: RetrievalDataset, query_mode: str, image_size: int | None
) -> tuple[list[PreparedQuery], list[dict[str, Any]]]:
    """Load every query, crop it to its box for "bb", and downscale it to `image_size`.

    A query whose image is missing or cannot be decoded is logged and reported, and
    the other queries still load.

    Args:
      dataset: the dataset.
      query_mode: "bb" or "wi".
      image_size: maximum long side in pixels (downscale only, cirtorch's thumbnail),
        or None for the native size.

    Returns:
      (prepared queries in dataset order, failures as {"query", "error"} dicts).
    """
    prepared, failures = [], []
    for index, name in enumerate(dataset.query_names):
        try:
            image = images.resize_long_side(dataset.load_query(index, query_mode), image_size)
        except (FileNotFoundError, images.ImageReadError, ValueError) as error:
            logging.error("Skipping query %s: %s", name, error)
            failures.append({"query": name, "error": str(error)})
            continue
        prepared.append(PreparedQuery(index=index, name=name, image=image))
    logging.info("Prepared %d of %d queries (%s, long side <= %s px).", len(prepared), len(dataset.query_names),
                 query_mode, image_size)
    return prepared, failures
