"""Retrieval and image quality of query sets: the original queries and their modified versions.

The modified queries are always read back from the files the attack saved, so what is
measured is exactly what a user of the adversarial queries would submit.
"""

import dataclasses
import math
from typing import Any, Sequence

import numpy as np
from absl import logging

from pire_jax import images as images_lib
from pire_jax.datasets import GroundTruth
from pire_jax.evaluation import evaluate_ranks, linf_grey_levels, psnr, ssim
from pire_jax.retrieval.system import RetrievalSystem


def subset_ground_truth(ground_truth: GroundTruth, query_indices: Sequence[int]) -> GroundTruth:
    """Keep only the listed queries (e.g. those whose image could be read and attacked)."""
    return dataclasses.replace(
        ground_truth,
        query_names=tuple(ground_truth.query_names[index] for index in query_indices),
        queries=tuple(ground_truth.queries[index] for index in query_indices),
    )


def retrieval_quality(
    system: RetrievalSystem,
    database_descriptors: Sequence[Any],
    query_images: Sequence[np.ndarray],
    ground_truth: GroundTruth,
) -> dict[str, Any]:
    """Rank the database for each query image and evaluate the ranking.

    Args:
      system: the retrieval system.
      database_descriptors: the system's descriptors of every database image.
      query_images: uint8 (H, W, 3) queries, already cropped when the query mode is
        "bb" (they are described whole).
      ground_truth: ground truth restricted to these queries, in the same order.

    Returns:
      `evaluate_ranks` output: mAP and per-query AP in percent.
    """
    if len(query_images) != len(ground_truth.queries):
        raise ValueError(f"{len(query_images)} query images for {len(ground_truth.queries)} ground-truth queries.")
    query_descriptors = [system.describe_query(image, None) for image in query_images]
    ranks = system.rank(query_descriptors, database_descriptors)
    return evaluate_ranks(ranks, ground_truth)


def _mean(values: Sequence[float]) -> float:
    finite = [value for value in values if math.isfinite(value)]
    return float(np.mean(finite)) if finite else float("nan")


def image_quality(originals: Sequence[np.ndarray], modified: Sequence[np.ndarray]) -> dict[str, Any]:
    """SSIM, PSNR (dB) and L-infinity (grey levels) of each modified query against its original, and their means.

    PSNR is infinite for an unchanged query; its mean is taken over the finite values.
    """
    ssims, psnrs, linfs = [], [], []
    for original, changed in zip(originals, modified, strict=True):
        ssims.append(ssim(original, changed))
        psnrs.append(psnr(original, changed))
        linfs.append(linf_grey_levels(original, changed))
    unchanged = sum(1 for value in linfs if value == 0)
    if unchanged:
        logging.warning("%d of %d modified queries are identical to their originals.", unchanged, len(linfs))
    return {
        "ssim_mean": round(_mean(ssims), 6),
        "ssim_per_query": [round(value, 6) for value in ssims],
        "psnr_mean": round(_mean(psnrs), 4),
        "psnr_per_query": [round(value, 4) if math.isfinite(value) else None for value in psnrs],
        "linf_max": int(max(linfs)) if linfs else 0,
        "linf_per_query": linfs,
        "unchanged_queries": unchanged,
    }


def evaluate_attack_run(
    dataset,
    queries: Sequence[Any],
    store,
    step_labels: dict[int, str],
    systems: dict[str, RetrievalSystem],
    database_descriptors: dict[str, Sequence[Any]],
) -> dict[str, Any]:
    """Evaluate the original and the saved modified queries of a run on every system.

    Args:
      dataset: the `RetrievalDataset`.
      queries: the `PreparedQuery`s that were attacked and finished, in dataset order.
      store: the run's `AdversarialStore`; modified queries are read back from it.
      step_labels: label of each stored step, e.g. {200: "T200", 500: "T500"}.
      systems: retrieval systems by name.
      database_descriptors: each system's database descriptors.

    Returns:
      {"systems": {name: {"original": ..., label: ...}}, "image_quality": {label: ...},
       "query_names": [...]}, with mAP and AP in percent.
    """
    ground_truth = subset_ground_truth(dataset.ground_truth, [query.index for query in queries])
    originals = [query.image for query in queries]
    modified = {
        label: [images_lib.load_image(store.image_path(query.name, step)) for query in queries]
        for step, label in step_labels.items()
    }
    results: dict[str, Any] = {"systems": {}, "image_quality": {}, "query_names": [query.name for query in queries]}
    for label, adversarial in modified.items():
        results["image_quality"][label] = image_quality(originals, adversarial)
    for name, system in systems.items():
        per_system = {"original": retrieval_quality(system, database_descriptors[name], originals, ground_truth)}
        for label, adversarial in modified.items():
            per_system[label] = retrieval_quality(system, database_descriptors[name], adversarial, ground_truth)
            logging.info("%s: mAP %.2f%% original, %.2f%% %s.", name, per_system["original"]["map"],
                         per_system[label]["map"], label)
        results["systems"][name] = per_system
    return results
