"""Visual codebook: k-means (faiss) on local descriptors, and nearest-word assignment.

References:
  Sivic and Zisserman, "Video Google: a text retrieval approach to object matching in
  videos", ICCV 2003 (visual words by k-means on SIFT).
"""

import faiss
import numpy as np
from absl import logging

# faiss (1.7 to 1.15) warns below 39 training points per centroid
# (ClusteringParameters.min_points_per_centroid). Below that the centroids mostly sit on
# single descriptors, so we reject the training set instead of building such a codebook.
MIN_DESCRIPTORS_PER_WORD = 39
# faiss subsamples above 256 points per centroid (ClusteringParameters.max_points_per_centroid).
# We subsample ourselves with the codebook seed, so that the sample is reproducible and logged.
MAX_DESCRIPTORS_PER_WORD = 256
DEFAULT_ITERATIONS = 25  # faiss ClusteringParameters.niter default


class InsufficientTrainingDataError(ValueError):
    """Too few training descriptors for the requested number of visual words."""


def check_training_size(n_descriptors: int, n_words: int) -> None:
    """Raise InsufficientTrainingDataError unless there are `MIN_DESCRIPTORS_PER_WORD` descriptors per word."""
    required = MIN_DESCRIPTORS_PER_WORD * n_words
    if n_descriptors < required:
        supported = n_descriptors // MIN_DESCRIPTORS_PER_WORD
        raise InsufficientTrainingDataError(
            f"Too few training descriptors for a codebook of {n_words} words: got {n_descriptors}, need at least "
            f"{required} ({MIN_DESCRIPTORS_PER_WORD} per word). Lower --codebook_size to at most {supported}, "
            "or train on a larger image set (--codebook_training_dataset)."
        )


def subsample_training_descriptors(descriptors: np.ndarray, n_words: int, seed: int) -> np.ndarray:
    """Return at most `MAX_DESCRIPTORS_PER_WORD * n_words` rows, drawn without replacement with `seed`."""
    limit = MAX_DESCRIPTORS_PER_WORD * n_words
    if descriptors.shape[0] <= limit:
        return descriptors
    logging.info("Subsampling %d training descriptors to %d (%d per word).", descriptors.shape[0], limit,
                 MAX_DESCRIPTORS_PER_WORD)
    rows = np.random.default_rng(seed).choice(descriptors.shape[0], size=limit, replace=False)
    return descriptors[np.sort(rows)]


def train_codebook(
    descriptors: np.ndarray, n_words: int, n_iterations: int = DEFAULT_ITERATIONS, seed: int = 0
) -> np.ndarray:
    """Cluster descriptors into `n_words` visual words with faiss k-means (L2).

    Args:
      descriptors: float32 (n, d) training descriptors; n must be at least
        `MIN_DESCRIPTORS_PER_WORD * n_words`.
      n_words: codebook size k.
      n_iterations: Lloyd iterations.
      seed: seed of the faiss initialisation.

    Returns:
      float32 (n_words, d) centroids.

    Raises:
      InsufficientTrainingDataError: too few descriptors for `n_words`.
    """
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2:
        raise ValueError(f"Invalid training descriptors of shape {descriptors.shape}; expected (n, d).")
    if n_words < 1:
        raise ValueError(f"Invalid codebook size {n_words}; expected at least 1 word.")
    check_training_size(descriptors.shape[0], n_words)

    logging.info("Training a codebook of %d words on %d descriptors (%d iterations, seed %d).", n_words,
                 descriptors.shape[0], n_iterations, seed)
    kmeans = faiss.Kmeans(
        descriptors.shape[1],
        n_words,
        niter=n_iterations,
        seed=seed,
        verbose=False,
        min_points_per_centroid=MIN_DESCRIPTORS_PER_WORD,
        max_points_per_centroid=MAX_DESCRIPTORS_PER_WORD,
    )
    kmeans.train(descriptors)
    logging.info("Codebook trained: final k-means objective %.4g.", float(kmeans.obj[-1]))
    return np.asarray(kmeans.centroids, dtype=np.float32).reshape(n_words, descriptors.shape[1])


def assign_words(descriptors: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Assign each descriptor to its nearest centroid (L2, exact search).

    Args:
      descriptors: float (n, d).
      centroids: float32 (k, d).

    Returns:
      int32 (n,) word indices in 0..k-1.
    """
    descriptors = np.ascontiguousarray(descriptors, dtype=np.float32)
    if descriptors.ndim != 2 or descriptors.shape[1] != centroids.shape[1]:
        raise ValueError(
            f"Invalid descriptors of shape {descriptors.shape} for a codebook of shape {centroids.shape}; "
            "expected (n, d) with the codebook's d."
        )
    if descriptors.shape[0] == 0:
        return np.zeros((0,), np.int32)
    index = faiss.IndexFlatL2(centroids.shape[1])
    index.add(np.ascontiguousarray(centroids, dtype=np.float32))
    _, nearest = index.search(descriptors, 1)
    return nearest[:, 0].astype(np.int32)
