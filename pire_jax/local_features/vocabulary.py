"""The learned part of SIFT bag-of-words retrieval: codebook, HE projection and HE medians.

A vocabulary is trained once on the SIFT descriptors of a training image set, which
may differ from the evaluated collection. It is saved as an .npz file whose name
contains a hash of the settings and of the training files' names, sizes and
modification times. A later run with the same settings and files loads it instead of
training again.
"""

import dataclasses
import hashlib
import json
import os
import zipfile
from typing import Any, Sequence

import numpy as np
from absl import logging

from pire_jax import atomic_io, images
from pire_jax.local_features import codebook, hamming_embedding, sift

VOCABULARY_FORMAT_VERSION = 1
DEFAULT_CODEBOOK_SIZE = 20000  # Jegou et al. 2008 and Liu et al. 2019 (ICMR): 20k visual words


@dataclasses.dataclass(frozen=True)
class VocabularyConfig:
    """Settings of the codebook and of the Hamming Embedding parameters learned with it.

    Attributes:
      n_words: codebook size k.
      n_iterations: k-means iterations.
      seed: seed of the k-means initialisation and of the training subsample.
      projection_seed: seed of the random HE projection.
    """

    n_words: int = DEFAULT_CODEBOOK_SIZE
    n_iterations: int = codebook.DEFAULT_ITERATIONS
    seed: int = 0
    projection_seed: int = 0

    def __post_init__(self):
        if self.n_words < 1:
            raise ValueError(f"Invalid codebook size {self.n_words}; expected at least 1 word.")
        if self.n_iterations < 1:
            raise ValueError(f"Invalid k-means iterations {self.n_iterations}; expected at least 1.")


@dataclasses.dataclass(frozen=True)
class Vocabulary:
    """A trained codebook with its Hamming Embedding parameters.

    Attributes:
      centroids: float32 (n_words, 128), the visual words.
      projection: float32 (64, 128), the HE projection P.
      medians: float32 (n_words, 64), the HE thresholds per word and bit.
    """

    centroids: np.ndarray
    projection: np.ndarray
    medians: np.ndarray

    def __post_init__(self):
        n_words, dimension = self.centroids.shape
        if self.projection.shape != (hamming_embedding.SIGNATURE_BITS, dimension):
            raise ValueError(f"Invalid HE projection of shape {self.projection.shape} for {dimension}-d descriptors.")
        if self.medians.shape != (n_words, hamming_embedding.SIGNATURE_BITS):
            raise ValueError(f"Invalid HE medians of shape {self.medians.shape} for {n_words} words.")

    @property
    def n_words(self) -> int:
        return self.centroids.shape[0]

    def fingerprint(self) -> str:
        """Return a SHA-256 of the arrays, which changes whenever any learned value changes."""
        digest = hashlib.sha256()
        for array in (self.centroids, self.projection, self.medians):
            digest.update(np.ascontiguousarray(array, dtype=np.float32).tobytes())
        return digest.hexdigest()

    def quantize(self, descriptors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return the visual words (int32) and HE signatures (np.uint64) of descriptors (n, 128)."""
        words = codebook.assign_words(descriptors, self.centroids)
        signatures = hamming_embedding.compute_signatures(descriptors, words, self.projection, self.medians)
        return words, signatures


def train_vocabulary(descriptors: np.ndarray, config: VocabularyConfig) -> Vocabulary:
    """Train the codebook, then learn the HE medians on the same training descriptors.

    Args:
      descriptors: float32 (n, 128) training descriptors; at least
        `codebook.MIN_DESCRIPTORS_PER_WORD * config.n_words` rows.
      config: codebook and projection settings.

    Raises:
      codebook.InsufficientTrainingDataError: too few descriptors for `config.n_words`.
    """
    codebook.check_training_size(descriptors.shape[0], config.n_words)
    sample = codebook.subsample_training_descriptors(descriptors, config.n_words, config.seed)
    centroids = codebook.train_codebook(sample, config.n_words, config.n_iterations, config.seed)

    projection = hamming_embedding.make_projection(config.projection_seed, dimension=descriptors.shape[1])
    words = codebook.assign_words(sample, centroids)
    medians = hamming_embedding.learn_medians(hamming_embedding.project(sample, projection), words, config.n_words)
    return Vocabulary(centroids=centroids, projection=projection, medians=medians)


def describe_files(paths: Sequence[str]) -> list[list[Any]]:
    """Return [base name, size in bytes, mtime in ns] of each file, the identity used in cache keys."""
    identity = []
    for path in paths:
        status = os.stat(path)
        identity.append([os.path.basename(path), status.st_size, status.st_mtime_ns])
    return identity


def vocabulary_key(
    sift_config: sift.SiftConfig, config: VocabularyConfig, training_name: str, training_paths: Sequence[str]
) -> str:
    """Hash everything that determines a trained vocabulary into a hex SHA-256."""
    description = {
        "format": VOCABULARY_FORMAT_VERSION,
        "sift": dataclasses.asdict(sift_config),
        "vocabulary": dataclasses.asdict(config),
        "training_set": training_name,
        "training_files": describe_files(training_paths),
    }
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode("utf-8")).hexdigest()


def save_vocabulary(path: str, vocabulary: Vocabulary, key: str) -> None:
    """Write the vocabulary and its key to an .npz file atomically."""
    with atomic_io.atomic_output_path(path) as temporary_path:
        with open(temporary_path, "wb") as stream:
            np.savez(
                stream,
                key=np.array(key),
                centroids=vocabulary.centroids,
                projection=vocabulary.projection,
                medians=vocabulary.medians,
            )


def load_vocabulary(path: str, key: str | None = None) -> Vocabulary:
    """Read a vocabulary written by `save_vocabulary`.

    Raises:
      ValueError: the file is corrupt, or its stored key differs from `key`.
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            stored_key = str(stored["key"])
            vocabulary = Vocabulary(
                centroids=np.asarray(stored["centroids"], np.float32),
                projection=np.asarray(stored["projection"], np.float32),
                medians=np.asarray(stored["medians"], np.float32),
            )
    except (OSError, KeyError, EOFError, ValueError, zipfile.BadZipFile) as error:
        raise ValueError(f"Cannot read vocabulary file {path}: {error}.") from error
    if key is not None and stored_key != key:
        raise ValueError(f"Vocabulary file {path} belongs to other settings (key {stored_key[:16]}, expected {key[:16]}).")
    return vocabulary


def extract_training_descriptors(paths: Sequence[str], sift_config: sift.SiftConfig) -> np.ndarray:
    """Extract SIFT from each training image and stack the descriptors (float32 (n, 128)).

    Unreadable images are logged and skipped.
    """
    blocks = []
    for number, path in enumerate(paths):
        try:
            features = sift.extract_sift(images.load_image(path), sift_config)
        except images.ImageReadError as error:
            logging.error("Skipping training image %s: %s", path, error)
            continue
        blocks.append(features.descriptors)
        if (number + 1) % 20 == 0 or number + 1 == len(paths):
            logging.info("SIFT on training images: %d of %d done.", number + 1, len(paths))
    if not blocks:
        return np.zeros((0, sift.SIFT_DIMENSION), np.float32)
    return np.concatenate(blocks, axis=0)


def load_or_train_vocabulary(
    training_paths: Sequence[str],
    training_name: str,
    sift_config: sift.SiftConfig,
    config: VocabularyConfig,
    cache_dir: str,
) -> Vocabulary:
    """Load the vocabulary for these settings and training files, training and saving it if needed.

    Args:
      training_paths: image files to train on.
      training_name: name of the training set (e.g. the dataset name), part of the key.
      sift_config: SIFT settings, which must match those of the retrieval system.
      config: codebook and projection settings.
      cache_dir: folder of the saved vocabularies.

    Returns:
      The vocabulary. A corrupt saved file is retrained with a warning.

    Raises:
      codebook.InsufficientTrainingDataError: too few training descriptors.
    """
    if not training_paths:
        raise ValueError(f"Training set {training_name!r} has no images; choose another --codebook_training_dataset.")
    key = vocabulary_key(sift_config, config, training_name, training_paths)
    path = os.path.join(cache_dir, f"vocabulary_{training_name}_{config.n_words}w_{key[:16]}.npz")
    if os.path.exists(path):
        try:
            vocabulary = load_vocabulary(path, key)
            logging.info("Loaded vocabulary %s (%d words).", path, vocabulary.n_words)
            return vocabulary
        except ValueError as error:
            logging.warning("Retraining the vocabulary because the saved file is unusable: %s", error)

    logging.info("Training a vocabulary of %d words on %d images of %s.", config.n_words, len(training_paths),
                 training_name)
    descriptors = extract_training_descriptors(training_paths, sift_config)
    vocabulary = train_vocabulary(descriptors, config)
    save_vocabulary(path, vocabulary, key)
    logging.info("Saved vocabulary %s.", path)
    return vocabulary
