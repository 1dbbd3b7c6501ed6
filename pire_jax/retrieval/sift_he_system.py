"""SIFT bag of visual words with Hamming Embedding ("sift_he") and without it ("bow"), as RetrievalSystems.

Each image's SIFT descriptors (OpenCV, on the grey image) are assigned to their
nearest visual word in a k-means codebook and get a 64-bit HE signature. The database
goes into an inverted file. A query scores each image by tf-idf over the same-word
pairs whose signatures are within the Hamming threshold (see
`pire_jax.local_features.inverted_file`). A bounding-box query extracts SIFT on the
whole image and keeps the keypoints inside the box, as the Oxford protocol does for
local features.

The codebook and HE medians are learned on a training image set, typically another
dataset (e.g. train on ukbench56, evaluate landmarks48), and saved for reuse
(`pire_jax.local_features.vocabulary`).

References:
  H. Jegou, M. Douze, C. Schmid, "Hamming Embedding and Weak Geometric Consistency
  for Large Scale Image Search", ECCV 2008.
  Z. Liu, Z. Zhao, M. Larson, "Who's Afraid of Adversarial Queries?", ICMR 2019
  (the local-feature system: SIFT, 20k words, HE with 64 bits and threshold 24).
"""

import dataclasses
import os
from typing import Any, Sequence

import cv2
import numpy as np
from absl import logging

from pire_jax.local_features import inverted_file, sift, vocabulary as vocabulary_lib
from pire_jax.retrieval import system as system_lib


@dataclasses.dataclass(frozen=True)
class BagOfWordsDescriptor:
    """Quantised local features of one image.

    Attributes:
      words: int32 (n,), visual word of each keypoint.
      signatures: np.uint64 (n,), Hamming Embedding signature of each keypoint.
    """

    words: np.ndarray
    signatures: np.ndarray

    def __len__(self) -> int:
        return self.words.shape[0]


def empty_bag_of_words() -> BagOfWordsDescriptor:
    """Return the descriptor of an image without keypoints; it scores 0 against everything."""
    return BagOfWordsDescriptor(words=np.zeros((0,), np.int32), signatures=np.zeros((0,), np.uint64))


def default_cache_dir(kind: str) -> str:
    """Return `$XDG_CACHE_HOME/pire_jax/<kind>` (`~/.cache/pire_jax/<kind>` when unset)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "pire_jax", kind)


class SiftBagOfWordsSystem:
    """SIFT bag-of-words retrieval, with Hamming Embedding unless the matching threshold is None.

    The vocabulary comes either ready (`vocabulary`) or from a training dataset
    (`training_dataset` under `training_data_root`), in which case it is loaded from
    `vocabulary_dir` or trained and saved there on first use.
    """

    def __init__(
        self,
        name: str = "sift_he",
        sift_config: sift.SiftConfig = sift.SiftConfig(),
        vocabulary_config: vocabulary_lib.VocabularyConfig = vocabulary_lib.VocabularyConfig(),
        matching: inverted_file.MatchingConfig = inverted_file.MatchingConfig(),
        training_dataset: str | None = None,
        training_data_root: str | None = None,
        vocabulary_dir: str | None = None,
        vocabulary: vocabulary_lib.Vocabulary | None = None,
    ):
        if vocabulary is None and training_dataset is None:
            raise ValueError(
                f"Retrieval system {name!r} needs a codebook: pass --codebook_training_dataset (e.g. ukbench56) "
                "to train one, or a trained vocabulary."
            )
        if vocabulary is not None and vocabulary.n_words != vocabulary_config.n_words:
            raise ValueError(
                f"The vocabulary has {vocabulary.n_words} words but the configuration asks for "
                f"{vocabulary_config.n_words}; pass the matching --codebook_size."
            )
        self.name = name
        self.sift_config = sift_config
        self.vocabulary_config = vocabulary_config
        self.matching = matching
        self.training_dataset = training_dataset
        self.training_data_root = training_data_root
        self.vocabulary_dir = vocabulary_dir or default_cache_dir("vocabularies")
        self._vocabulary = vocabulary
        self._indexed_database: list[Any] | None = None
        self._index: inverted_file.InvertedFile | None = None

    @property
    def vocabulary(self) -> vocabulary_lib.Vocabulary:
        """The codebook and HE parameters, loaded or trained on first access."""
        if self._vocabulary is None:
            # Imported here because the datasets package is only needed to train.
            from pire_jax import datasets  # pylint: disable=import-outside-toplevel

            training = datasets.load_dataset(self.training_data_root, self.training_dataset, restrict_to_present=True)
            paths = [training.image_path(index) for index in range(len(training.image_names))]
            self._vocabulary = vocabulary_lib.load_or_train_vocabulary(
                paths, training.name, self.sift_config, self.vocabulary_config, self.vocabulary_dir
            )
        return self._vocabulary

    def settings(self) -> dict[str, Any]:
        """Return the settings that change database descriptors: SIFT, codebook and the vocabulary's fingerprint.

        The matching rule (threshold, weighting, burstiness) only changes the ranking,
        so it is left out and cached descriptors stay valid when it changes. Loads or
        trains the vocabulary.
        """
        return {
            "sift": dataclasses.asdict(self.sift_config),
            "vocabulary": dataclasses.asdict(self.vocabulary_config),
            "vocabulary_fingerprint": self.vocabulary.fingerprint(),
            "training_dataset": self.training_dataset,
        }

    def empty_descriptor(self) -> BagOfWordsDescriptor:
        """Return the descriptor used for an image that cannot be read."""
        return empty_bag_of_words()

    def describe_features(self, features: sift.LocalFeatures) -> BagOfWordsDescriptor:
        """Quantise SIFT features into words and signatures."""
        if len(features) == 0:
            return empty_bag_of_words()
        words, signatures = self.vocabulary.quantize(features.descriptors)
        return BagOfWordsDescriptor(words=words, signatures=signatures)

    def _describe_one(self, image: np.ndarray, box: Sequence[float] | None, label: str) -> BagOfWordsDescriptor:
        try:
            features = sift.extract_sift(image, self.sift_config)
        except (ValueError, cv2.error) as error:
            logging.error("SIFT failed on %s, which gets an empty descriptor (score 0): %s", label, error)
            return empty_bag_of_words()
        if box is not None:
            features = sift.keep_inside_box(features, box)
        if len(features) == 0:
            logging.warning("No SIFT keypoint in %s, which gets an empty descriptor (score 0).", label)
            return empty_bag_of_words()
        return self.describe_features(features)

    def describe_database(self, images: Sequence[np.ndarray]) -> list[BagOfWordsDescriptor]:
        """Describe database images; an image that fails or has no keypoint gets an empty descriptor."""
        return [self._describe_one(image, None, f"database image {number}") for number, image in enumerate(images)]

    def describe_query(self, image: np.ndarray, box: Sequence[float] | None) -> BagOfWordsDescriptor:
        """Describe a query; with a box, only keypoints inside it are kept."""
        return self._describe_one(image, box, "the query" if box is None else f"the query box {list(box)}")

    def _inverted_file(self, database_descriptors: Sequence[BagOfWordsDescriptor]) -> inverted_file.InvertedFile:
        """Build the inverted file, reusing the last one when called again with the same descriptor objects."""
        previous = self._indexed_database
        if (
            previous is not None
            and len(previous) == len(database_descriptors)
            and all(old is new for old, new in zip(previous, database_descriptors))
        ):
            return self._index
        index = inverted_file.build_inverted_file(
            [descriptor.words for descriptor in database_descriptors],
            [descriptor.signatures for descriptor in database_descriptors],
            self.vocabulary_config.n_words,
        )
        logging.info("Inverted file built: %d images, %d postings, %d words.", index.n_images,
                     index.posting_images.shape[0], index.n_words)
        self._indexed_database = list(database_descriptors)
        self._index = index
        return index

    def score(
        self, query_descriptors: Sequence[BagOfWordsDescriptor], database_descriptors: Sequence[BagOfWordsDescriptor]
    ) -> np.ndarray:
        """Return the tf-idf HE scores, float64 (n_database, n_queries)."""
        index = self._inverted_file(database_descriptors)
        scores = np.zeros((index.n_images, len(query_descriptors)), dtype=np.float64)
        for column, query in enumerate(query_descriptors):
            scores[:, column] = inverted_file.score_query(index, query.words, query.signatures, self.matching)
        return scores

    def rank(
        self, query_descriptors: Sequence[BagOfWordsDescriptor], database_descriptors: Sequence[BagOfWordsDescriptor]
    ) -> np.ndarray:
        """Rank the database by decreasing score; ties (e.g. all-zero scores) keep database order.

        Returns:
          int64 (n_database, n_queries), revisitop layout.
        """
        return np.argsort(-self.score(query_descriptors, database_descriptors), axis=0, kind="stable")


def make_sift_he_system(**options: Any) -> SiftBagOfWordsSystem:
    """Build the SIFT + Hamming Embedding system (keyword arguments of `SiftBagOfWordsSystem`)."""
    options.setdefault("name", "sift_he")
    matching = options.get("matching", inverted_file.MatchingConfig())
    if matching.hamming_threshold is None:
        raise ValueError("The sift_he system needs a Hamming threshold; use --system bow for plain bag of words.")
    return SiftBagOfWordsSystem(**options)


def make_bow_system(**options: Any) -> SiftBagOfWordsSystem:
    """Build plain SIFT bag of words: every same-word pair matches and counts 1 (burstiness stays optional)."""
    options.setdefault("name", "bow")
    matching = options.get("matching", inverted_file.MatchingConfig())
    options["matching"] = dataclasses.replace(matching, hamming_threshold=None, weighting="none")
    return SiftBagOfWordsSystem(**options)


system_lib.register_system("sift_he", make_sift_he_system)
system_lib.register_system("bow", make_bow_system)
