"""Classical systems on real photos: ukbench56 objects retrieved with a codebook trained on landmarks48.

These tests need PIRE_DATA_ROOT. They use a 256-word codebook and at most 800 SIFT
keypoints per image so that the file runs in well under 2 minutes on 2 cores.
"""

import numpy as np
import pytest

from pire_jax.datasets import load_dataset
from pire_jax.evaluation import evaluate_ranks
from pire_jax.local_features import sift, vocabulary
from pire_jax.retrieval import make_system

SIFT_CONFIG = sift.SiftConfig(n_features=800)
CODEBOOK_SIZE = 256
# Each ukbench56 query has 3 relevant views among 55 other images, so a random ranking
# scores an mAP of about 8.6% (simulated with revisitop AP).
CHANCE_MAP = 8.6


@pytest.fixture(scope="module")
def ukbench(data_root):
    dataset = load_dataset(data_root, "ukbench56")
    database = [dataset.load_database_image(index) for index in range(len(dataset.image_names))]
    queries = [dataset.load_query(query, "wi") for query in range(len(dataset.query_names))]
    return dataset, database, queries


@pytest.fixture(scope="module")
def landmarks_vocabulary(data_root):
    training = load_dataset(data_root, "landmarks48")
    # Every fifth landmarks48 photo: 15 images, about 11,800 descriptors for 256 words.
    paths = [training.image_path(index) for index in range(0, len(training.image_names), 5)]
    descriptors = vocabulary.extract_training_descriptors(paths, SIFT_CONFIG)
    return vocabulary.train_vocabulary(
        descriptors, vocabulary.VocabularyConfig(n_words=CODEBOOK_SIZE, n_iterations=10)
    )


def evaluate(system, ukbench) -> dict:
    dataset, database, queries = ukbench
    database_descriptors = system.describe_database(database)
    query_descriptors = [system.describe_query(query, dataset.query_box(number)) for number, query in
                         enumerate(queries)]
    ranks = system.rank(query_descriptors, database_descriptors)
    assert ranks.shape == (len(database), len(queries))
    return evaluate_ranks(ranks, dataset.ground_truth)


def test_sift_he_finds_other_views(ukbench, landmarks_vocabulary):
    system = make_system(
        "sift_he",
        sift_config=SIFT_CONFIG,
        vocabulary_config=vocabulary.VocabularyConfig(n_words=CODEBOOK_SIZE),
        vocabulary=landmarks_vocabulary,
    )
    result = evaluate(system, ukbench)
    # Measured 95.9 with these settings.
    assert result["map"] > 6 * CHANCE_MAP
    assert result["mp@k"]["1"] > 80.0


def test_bow_finds_other_views(ukbench, landmarks_vocabulary):
    system = make_system(
        "bow",
        sift_config=SIFT_CONFIG,
        vocabulary_config=vocabulary.VocabularyConfig(n_words=CODEBOOK_SIZE),
        vocabulary=landmarks_vocabulary,
    )
    # Measured 94.8 with these settings.
    assert evaluate(system, ukbench)["map"] > 6 * CHANCE_MAP


@pytest.mark.parametrize("name, minimum_map", [("cedd", 5 * CHANCE_MAP), ("gist", 4 * CHANCE_MAP)])
def test_global_systems_above_chance(ukbench, name, minimum_map):
    # Measured: CEDD 86.0, GIST 74.7.
    result = evaluate(make_system(name), ukbench)
    assert result["map"] > minimum_map
    assert np.isfinite(result["map"])


def test_codebook_trained_from_dataset(data_root, tmp_path):
    options = dict(
        sift_config=sift.SiftConfig(n_features=300),
        vocabulary_config=vocabulary.VocabularyConfig(n_words=128, n_iterations=5),
        training_dataset="ukbench56",
        training_data_root=data_root,
        vocabulary_dir=str(tmp_path),
    )
    first = make_system("sift_he", **options)
    settings = first.settings()  # trains on the 56 ukbench56 photos and saves the codebook
    saved = list(tmp_path.iterdir())
    assert len(saved) == 1
    assert saved[0].name.startswith("vocabulary_ukbench56_128w_")
    assert settings["training_dataset"] == "ukbench56"
    saved_at = saved[0].stat().st_mtime_ns

    # A second system with the same settings loads the saved codebook instead of training.
    second = make_system("sift_he", **options)
    assert second.settings() == settings
    assert list(tmp_path.iterdir()) == saved
    assert saved[0].stat().st_mtime_ns == saved_at
