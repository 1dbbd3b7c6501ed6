"""Reading a dataset's queries into the exact uint8 images that are attacked and evaluated."""

from typing import Any

import numpy as np
from absl import logging
from PIL import Image

from pire_jax import images
from pire_jax.datasets import RetrievalDataset
from pire_jax.pipeline.pire_queries import PreparedQuery


def snap_to_multiple(image: np.ndarray, multiple: int) -> np.ndarray:
    """Resize a uint8 image so that height and width are the nearest multiples of `multiple`.

    Queries of similar aspect ratio then share a shape, and the attack compiles once
    for all of them. The aspect ratio changes by at most half a multiple per side.
    `multiple` 0 or 1 returns the image unchanged.
    """
    if multiple <= 1:
        return image
    height, width = image.shape[:2]
    target = (max(multiple, int(round(height / multiple)) * multiple), max(multiple, int(round(width / multiple)) * multiple))
    if target == (height, width):
        return image
    return np.asarray(Image.fromarray(image).resize((target[1], target[0]), Image.Resampling.LANCZOS))


def prepare_queries(
    dataset: RetrievalDataset, query_mode: str, image_size: int | None, shape_multiple: int = 0
) -> tuple[list[PreparedQuery], list[dict[str, Any]]]:
    """Load every query, crop it to its box for "bb", and downscale it to `image_size`.

    A query whose image is missing or cannot be decoded is logged and reported, and
    the other queries still load.

    Args:
      dataset: the dataset.
      query_mode: "bb" or "wi".
      image_size: maximum long side in pixels (downscale only, cirtorch's thumbnail),
        or None for the native size.
      shape_multiple: if > 1, then resize each query so both sides are multiples of
        it (see `snap_to_multiple`), which reduces the number of compiled shapes.

    Returns:
      (prepared queries in dataset order, failures as {"query", "error"} dicts).
    """
    prepared, failures = [], []
    for index, name in enumerate(dataset.query_names):
        try:
            image = images.resize_long_side(dataset.load_query(index, query_mode), image_size)
            image = snap_to_multiple(image, shape_multiple)
        except (FileNotFoundError, images.ImageReadError, ValueError) as error:
            logging.error("Skipping query %s: %s", name, error)
            failures.append({"query": name, "error": str(error)})
            continue
        prepared.append(PreparedQuery(index=index, name=name, image=image))
    shapes = {query.image.shape for query in prepared}
    logging.info("Prepared %d of %d queries (%s, long side <= %s px) in %d distinct shapes.", len(prepared),
                 len(dataset.query_names), query_mode, image_size, len(shapes))
    return prepared, failures
