"""Tests of the on-disk database descriptor cache."""

import logging as python_logging
import os

import numpy as np
import pytest

from pire_jax import images
from pire_jax.global_features import cedd
from pire_jax.retrieval import feature_cache, global_systems, sift_he_system


class CountingCeddSystem(global_systems.CeddSystem):
    """The real CEDD system, counting how many images it describes."""

    def __init__(self, config=cedd.CeddConfig()):
        super().__init__(config)
        self.described = 0

    def describe_database(self, images_to_describe):
        self.described += len(images_to_describe)
        return super().describe_database(images_to_describe)


@pytest.fixture
def image_paths(tmp_path):
    rng = np.random.default_rng(0)
    paths = []
    for number in range(5):
        path = str(tmp_path / "jpg" / f"image_{number}.png")
        images.save_image(path, rng.integers(0, 256, (90, 120, 3), dtype=np.uint8))
        paths.append(path)
    return paths


def test_unchanged_settings_hit(tmp_path, image_paths):
    cache_dir = str(tmp_path / "cache")
    system = CountingCeddSystem()
    first = feature_cache.load_or_compute_database_descriptors(system, "toy", image_paths, cache_dir)
    assert system.described == 5
    second = feature_cache.load_or_compute_database_descriptors(system, "toy", image_paths, cache_dir)
    assert system.described == 5
    assert len(second) == 5
    for before, after in zip(first, second):
        np.testing.assert_array_equal(before, after)
        assert after.dtype == np.uint8


def test_changed_setting_misses(tmp_path, image_paths):
    cache_dir = str(tmp_path / "cache")
    feature_cache.load_or_compute_database_descriptors(CountingCeddSystem(), "toy", image_paths, cache_dir)
    changed = CountingCeddSystem(cedd.CeddConfig(thresholds=(20.0, 0.68, 0.98, 0.98)))
    feature_cache.load_or_compute_database_descriptors(changed, "toy", image_paths, cache_dir)
    assert changed.described == 5
    assert len(os.listdir(os.path.join(cache_dir, "cedd"))) == 2


def test_changed_file_misses(tmp_path, image_paths):
    cache_dir = str(tmp_path / "cache")
    feature_cache.load_or_compute_database_descriptors(CountingCeddSystem(), "toy", image_paths, cache_dir)
    images.save_image(image_paths[2], np.zeros((90, 120, 3), np.uint8))
    system = CountingCeddSystem()
    descriptors = feature_cache.load_or_compute_database_descriptors(system, "toy", image_paths, cache_dir)
    assert system.described == 5
    np.testing.assert_array_equal(descriptors[2], cedd.cedd_histogram(np.zeros((90, 120, 3), np.uint8)))


def test_corrupt_file_recomputed(tmp_path, image_paths, caplog):
    cache_dir = str(tmp_path / "cache")
    original = feature_cache.load_or_compute_database_descriptors(CountingCeddSystem(), "toy", image_paths, cache_dir)
    (cached_file,) = os.listdir(os.path.join(cache_dir, "cedd"))
    path = os.path.join(cache_dir, "cedd", cached_file)
    with open(path, "wb") as stream:
        stream.write(b"not an npz file")

    system = CountingCeddSystem()
    with caplog.at_level(python_logging.WARNING):
        recomputed = feature_cache.load_or_compute_database_descriptors(system, "toy", image_paths, cache_dir)
    assert system.described == 5
    assert "Recomputing descriptors" in caplog.text
    assert cached_file in caplog.text
    for before, after in zip(original, recomputed):
        np.testing.assert_array_equal(before, after)
    # The rewritten file is valid again.
    reader = CountingCeddSystem()
    feature_cache.load_or_compute_database_descriptors(reader, "toy", image_paths, cache_dir)
    assert reader.described == 0


def test_unreadable_image_gets_empty_descriptor(tmp_path, image_paths, caplog):
    with open(image_paths[1], "wb") as stream:
        stream.write(b"truncated")
    system = CountingCeddSystem()
    with caplog.at_level(python_logging.ERROR):
        descriptors = feature_cache.load_or_compute_database_descriptors(system, "toy", image_paths, None)
    assert system.described == 4
    assert len(descriptors) == 5
    np.testing.assert_array_equal(descriptors[1], 0)
    assert "image_1.png is unreadable" in caplog.text


def test_unreadable_image_raises_for_gist(tmp_path, image_paths):
    with open(image_paths[0], "wb") as stream:
        stream.write(b"truncated")
    with pytest.raises(images.ImageReadError):
        feature_cache.load_or_compute_database_descriptors(global_systems.GistSystem(), "toy", image_paths, None)


def test_dataclass_descriptors_round_trip(tmp_path):
    descriptors = [
        sift_he_system.BagOfWordsDescriptor(np.array([3, 1, 4], np.int32), np.array([1, 2, 2**63], np.uint64)),
        sift_he_system.empty_bag_of_words(),
        sift_he_system.BagOfWordsDescriptor(np.array([5], np.int32), np.array([7], np.uint64)),
    ]
    path = str(tmp_path / "bow.npz")
    feature_cache.save_descriptors(path, "key", descriptors)
    loaded = feature_cache.load_descriptors(path, "key")
    assert [type(item) for item in loaded] == [sift_he_system.BagOfWordsDescriptor] * 3
    for before, after in zip(descriptors, loaded):
        np.testing.assert_array_equal(before.words, after.words)
        np.testing.assert_array_equal(before.signatures, after.signatures)
        assert after.signatures.dtype == np.uint64
    with pytest.raises(ValueError, match="other settings"):
        feature_cache.load_descriptors(path, "another key")


def test_uncacheable_type_rejected():
    with pytest.raises(TypeError, match="Cannot cache descriptors of type dict"):
        feature_cache.encode_descriptors([{"a": 1}])
