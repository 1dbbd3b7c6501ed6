"""Tests of SIFT, the codebook, Hamming Embedding, the inverted file and the sift_he / bow systems."""

import logging as python_logging
import os

import cv2
import numpy as np
import pytest

from pire_jax import images
from pire_jax.local_features import codebook, hamming_embedding, inverted_file, sift, vocabulary
from pire_jax.retrieval import make_system, sift_he_system


def styled_image(style: int, seed: int = 0, height: int = 240, width: int = 320) -> np.ndarray:
    """Draw 120 random shapes of one kind (circles, letters, rectangles, lines, ellipses or triangles).

    Each kind gives its own local structures, so visual words are not shared by every
    image and their idf is above 0, as in a real collection.
    """
    rng = np.random.default_rng(seed * 10 + style)
    image = np.full((height, width, 3), 255 if style % 2 else 0, np.uint8)
    for _ in range(120):
        colour = tuple(int(value) for value in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
        if style == 0:
            cv2.circle(image, (x, y), int(rng.integers(3, 15)), colour, -1)
        elif style == 1:
            letter = chr(int(rng.integers(65, 91)))
            cv2.putText(image, letter, (x, y), cv2.FONT_HERSHEY_SIMPLEX, float(rng.uniform(0.5, 1.5)), colour, 2)
        elif style == 2:
            cv2.rectangle(image, (x, y), (x + int(rng.integers(4, 25)), y + int(rng.integers(4, 25))), colour, -1)
        elif style == 3:
            angle, length = rng.uniform(0, np.pi), rng.uniform(10, 40)
            end = (int(x + length * np.cos(angle)), int(y + length * np.sin(angle)))
            cv2.line(image, (x, y), end, colour, 2)
        elif style == 4:
            axes = (int(rng.integers(5, 20)), int(rng.integers(2, 6)))
            cv2.ellipse(image, (x, y), axes, float(rng.uniform(0, 180)), 0, 360, colour, -1)
        else:
            corners = (rng.integers(-15, 15, (3, 2)) + [x, y]).astype(np.int32)
            cv2.fillPoly(image, [corners], colour)
    return image


@pytest.fixture(scope="module")
def synthetic_images():
    return [styled_image(style) for style in range(6)]


@pytest.fixture(scope="module")
def synthetic_vocabulary(synthetic_images):
    descriptors = np.concatenate([sift.extract_sift(image).descriptors for image in synthetic_images])
    return vocabulary.train_vocabulary(descriptors, vocabulary.VocabularyConfig(n_words=32, n_iterations=10))


def clustered_descriptors(n_words: int, per_word: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.uniform(0, 200, (n_words, 128))
    return (np.repeat(centres, per_word, axis=0) + rng.normal(0, 10, (n_words * per_word, 128))).astype(np.float32)


def test_sift_finds_keypoints(synthetic_images):
    features = sift.extract_sift(synthetic_images[0])
    assert len(features) > 50
    assert features.descriptors.shape == (len(features), 128)
    assert features.descriptors.dtype == np.float32
    assert features.positions[:, 0].max() < 320
    assert features.positions[:, 1].max() < 240


def test_sift_uses_project_grey(synthetic_images):
    image = synthetic_images[1]
    grey = images.quantize_to_uint8(images.rgb_to_grey(image))
    keypoints, descriptors = cv2.SIFT_create().detectAndCompute(grey, None)
    features = sift.extract_sift(image)
    assert len(features) == len(keypoints)
    np.testing.assert_allclose(features.descriptors, descriptors)


def test_sift_max_size_keeps_coordinates(synthetic_images):
    image = synthetic_images[2]
    features = sift.extract_sift(image, sift.SiftConfig(max_size=160))
    assert len(features) > 0
    # Positions are reported in the input image's pixels, not the downscaled ones.
    assert features.positions[:, 0].max() > 160


def test_root_sift_unit_norm(synthetic_images):
    features = sift.extract_sift(synthetic_images[0], sift.SiftConfig(root_sift=True))
    norms = np.linalg.norm(features.descriptors, axis=1)
    np.testing.assert_allclose(norms, 1.0, atol=1e-4)


def test_keep_inside_box():
    features = sift.LocalFeatures(
        positions=np.array([[5, 5], [50, 50], [10, 30], [30, 10]], np.float32),
        sizes=np.ones(4, np.float32),
        angles=np.zeros(4, np.float32),
        descriptors=np.arange(4 * 128, dtype=np.float32).reshape(4, 128),
    )
    inside = sift.keep_inside_box(features, [0, 0, 30, 20])
    np.testing.assert_array_equal(inside.positions, [[5, 5], [30, 10]])
    np.testing.assert_array_equal(inside.descriptors[:, 0], [0, 3 * 128])


def test_projection_orthonormal():
    projection = hamming_embedding.make_projection(seed=3)
    assert projection.shape == (64, 128)
    np.testing.assert_allclose(projection @ projection.T, np.eye(64), atol=1e-5)
    np.testing.assert_array_equal(projection, hamming_embedding.make_projection(seed=3))
    assert not np.allclose(projection, hamming_embedding.make_projection(seed=4))


def test_medians_per_word():
    rng = np.random.default_rng(1)
    projected = rng.normal(size=(301, 64)).astype(np.float32)
    words = rng.integers(0, 5, 301)
    medians = hamming_embedding.learn_medians(projected, words, n_words=6)
    for word in range(5):
        np.testing.assert_allclose(medians[word], np.median(projected[words == word], axis=0), rtol=1e-6)
    # Word 5 has no training descriptor and falls back to the global median.
    np.testing.assert_allclose(medians[5], np.median(projected, axis=0), rtol=1e-6)


def test_signatures_balanced_on_training():
    descriptors = clustered_descriptors(n_words=8, per_word=60)
    trained = vocabulary.train_vocabulary(descriptors, vocabulary.VocabularyConfig(n_words=8, n_iterations=10))
    _, signatures = trained.quantize(descriptors)
    assert signatures.dtype == np.uint64
    bits = np.unpackbits(signatures.view(np.uint8).reshape(-1, 8), axis=1, bitorder="little")
    assert abs(bits.mean() - 0.5) < 0.03
    per_bit = bits.mean(axis=0)
    assert per_bit.min() > 0.4
    assert per_bit.max() < 0.6


def test_pack_bits_order():
    bits = np.zeros((2, 64), bool)
    bits[0, 0] = True
    bits[1, 63] = True
    np.testing.assert_array_equal(hamming_embedding.pack_bits(bits), np.array([1, 1 << 63], dtype=np.uint64))


def test_hamming_distances_known_pairs(monkeypatch):
    first = np.array([0, 0, 0xFFFFFFFFFFFFFFFF, 0b1011], dtype=np.uint64)
    second = np.array([0, 0xFFFFFFFFFFFFFFFF, 0xFFFFFFFFFFFFFFFF, 0b0110], dtype=np.uint64)
    expected = [0, 64, 0, 3]
    np.testing.assert_array_equal(hamming_embedding.hamming_distances(first, second), expected)
    # The lookup-table path for numpy without np.bitwise_count gives the same counts.
    monkeypatch.delattr(np, "bitwise_count", raising=False)
    np.testing.assert_array_equal(hamming_embedding.hamming_distances(first, second), expected)


def signature_with_bits(n_bits: int) -> np.uint64:
    return np.uint64((1 << n_bits) - 1)


def test_threshold_admits_and_rejects():
    # Database images 0, 1 and 2 contain one feature of word 0 each, at Hamming distance
    # 24, 25 and 0 from the query. Image 3 contains word 1 only, so that idf(0) > 0.
    words = [np.array([0]), np.array([0]), np.array([0]), np.array([1])]
    signatures = [np.array([signature_with_bits(24)]), np.array([signature_with_bits(25)]), np.array([0], np.uint64),
                  np.array([0], np.uint64)]
    index = inverted_file.build_inverted_file(words, [np.asarray(s, np.uint64) for s in signatures], n_words=2)
    query_words, query_signatures = np.array([0]), np.array([0], np.uint64)

    scores = inverted_file.score_query(index, query_words, query_signatures, inverted_file.MatchingConfig())
    assert scores[0] > 0
    assert scores[1] == 0
    assert scores[2] > 0
    assert scores[3] == 0
    assert scores[0] == pytest.approx(scores[2])

    strict = inverted_file.score_query(index, query_words, query_signatures, inverted_file.MatchingConfig(23))
    assert strict[0] == 0
    assert strict[2] > 0

    weighted = inverted_file.score_query(
        index, query_words, query_signatures, inverted_file.MatchingConfig(weighting="gaussian")
    )
    assert weighted[0] == pytest.approx(weighted[2] * np.exp(-(24**2) / 16**2))


def brute_force_scores(db_words, db_signatures, query_words, query_signatures, n_words, config):
    """Score by looping over every feature pair, for comparison with the inverted file."""
    n_images = len(db_words)
    images_with_word = np.zeros(n_words)
    for words in db_words:
        images_with_word[np.unique(words)] += 1
    idf = np.where(images_with_word > 0, np.log(n_images / np.maximum(images_with_word, 1)), 0.0)

    def norm(words):
        return np.sqrt(((np.bincount(words, minlength=n_words) * idf) ** 2).sum())

    scores = np.zeros(n_images)
    for image, (words, signatures) in enumerate(zip(db_words, db_signatures)):
        for query_word, query_signature in zip(query_words, query_signatures):
            matches = []
            for word, signature in zip(words, signatures):
                if word != query_word:
                    continue
                distance = bin(int(query_signature) ^ int(signature)).count("1")
                if config.hamming_threshold is not None and distance > config.hamming_threshold:
                    continue
                weight = idf[word] ** 2
                if config.weighting == "gaussian":
                    weight *= np.exp(-(distance**2) / config.sigma**2)
                matches.append(weight)
            if config.burstiness and matches:
                total = sum(matches)
                matches = [match * np.sqrt(match / total) for match in matches]
            scores[image] += sum(matches)
        denominator = norm(words) * norm(query_words)
        scores[image] = scores[image] / denominator if denominator > 0 else 0.0
    return scores


@pytest.mark.parametrize(
    "config",
    [
        inverted_file.MatchingConfig(),
        inverted_file.MatchingConfig(hamming_threshold=30, weighting="gaussian"),
        inverted_file.MatchingConfig(hamming_threshold=None),
        inverted_file.MatchingConfig(hamming_threshold=28, burstiness=True),
        inverted_file.MatchingConfig(hamming_threshold=None, burstiness=True),
    ],
)
def test_inverted_file_matches_brute_force(config):
    rng = np.random.default_rng(7)
    n_words = 6
    # Signatures near a per-word prototype, so that some pairs fall under the threshold.
    prototypes = rng.integers(0, 2**63, n_words, dtype=np.uint64)

    def features(count):
        words = rng.integers(0, n_words, count)
        flips = np.array([int(sum(1 << int(bit) for bit in rng.choice(64, int(rng.integers(0, 40)), replace=False)))
                          for _ in range(count)], dtype=np.uint64)
        return words, prototypes[words] ^ flips

    database = [features(int(rng.integers(0, 12))) for _ in range(7)]
    db_words = [words for words, _ in database]
    db_signatures = [signatures for _, signatures in database]
    query_words, query_signatures = features(9)

    index = inverted_file.build_inverted_file(db_words, db_signatures, n_words)
    scores = inverted_file.score_query(index, query_words, query_signatures, config)
    expected = brute_force_scores(db_words, db_signatures, query_words, query_signatures, n_words, config)
    np.testing.assert_allclose(scores, expected, rtol=1e-10, atol=1e-12)
    # Scoring a few query features at a time gives the same scores.
    chunked = inverted_file.score_query(index, query_words, query_signatures, config, max_postings_per_chunk=3)
    np.testing.assert_allclose(chunked, expected, rtol=1e-10, atol=1e-12)


def test_query_touches_own_postings_only():
    words = [np.array([0, 0, 1]), np.array([2, 2, 2, 2]), np.array([1, 3])]
    signatures = [np.zeros(len(w), np.uint64) for w in words]
    index = inverted_file.build_inverted_file(words, signatures, n_words=4)
    query_feature, posting_row = inverted_file.gather_postings(index, np.array([1, 3]))
    # Word 1 has two postings and word 3 one; word 2's four postings are never read.
    np.testing.assert_array_equal(query_feature, [0, 0, 1])
    np.testing.assert_array_equal(index.posting_images[posting_row], [0, 2, 2])


def test_too_few_descriptors_raises():
    descriptors = clustered_descriptors(n_words=4, per_word=30)
    with pytest.raises(codebook.InsufficientTrainingDataError) as raised:
        vocabulary.train_vocabulary(descriptors, vocabulary.VocabularyConfig(n_words=4))
    message = str(raised.value)
    assert "got 120" in message
    assert "need at least 156" in message
    assert "--codebook_size to at most 3" in message


def test_image_retrieves_itself_first(synthetic_images, synthetic_vocabulary):
    system = sift_he_system.SiftBagOfWordsSystem(
        vocabulary_config=vocabulary.VocabularyConfig(n_words=32), vocabulary=synthetic_vocabulary
    )
    database = system.describe_database(synthetic_images)
    queries = [system.describe_query(image, None) for image in synthetic_images]
    ranks = system.rank(queries, database)
    assert ranks.shape == (6, 6)
    np.testing.assert_array_equal(ranks[0], np.arange(6))

    # Downscaled copies still find their original first.
    smaller = [cv2.resize(image, (256, 192), interpolation=cv2.INTER_AREA) for image in synthetic_images]
    ranks = system.rank([system.describe_query(image, None) for image in smaller], database)
    np.testing.assert_array_equal(ranks[0], np.arange(6))

    # A bounding-box query keeps only the keypoints of the box and still finds its image.
    box_query = system.describe_query(synthetic_images[3], [40, 30, 200, 180])
    assert 0 < len(box_query) < len(queries[3])
    assert system.rank([box_query], database)[0, 0] == 3


def test_bow_retrieves_itself_first(synthetic_images, synthetic_vocabulary):
    system = make_system(
        "bow", vocabulary_config=vocabulary.VocabularyConfig(n_words=32), vocabulary=synthetic_vocabulary
    )
    assert system.matching.hamming_threshold is None
    database = system.describe_database(synthetic_images)
    ranks = system.rank(database, database)
    np.testing.assert_array_equal(ranks[0], np.arange(6))


def test_empty_descriptor_handled(synthetic_images, synthetic_vocabulary, caplog):
    system = sift_he_system.SiftBagOfWordsSystem(
        vocabulary_config=vocabulary.VocabularyConfig(n_words=32), vocabulary=synthetic_vocabulary
    )
    flat = np.full((120, 160, 3), 128, np.uint8)
    malformed = np.zeros((10, 10), np.float32)
    with caplog.at_level(python_logging.WARNING):
        database = system.describe_database([synthetic_images[0], flat, malformed, synthetic_images[1]])
    assert [len(descriptor) > 0 for descriptor in database] == [True, False, False, True]
    assert "No SIFT keypoint in database image 1" in caplog.text
    assert "SIFT failed on database image 2" in caplog.text

    scores = system.score([database[0], sift_he_system.empty_bag_of_words()], database)
    assert scores[1, 0] == 0
    assert scores[2, 0] == 0
    assert scores[0, 0] > 0
    np.testing.assert_array_equal(scores[:, 1], 0)
    np.testing.assert_array_equal(system.rank([sift_he_system.empty_bag_of_words()], database)[:, 0], np.arange(4))


def test_inverted_file_reused(synthetic_images, synthetic_vocabulary):
    system = sift_he_system.SiftBagOfWordsSystem(
        vocabulary_config=vocabulary.VocabularyConfig(n_words=32), vocabulary=synthetic_vocabulary
    )
    database = system.describe_database(synthetic_images[:3])
    first = system._inverted_file(database)
    assert system._inverted_file(list(database)) is first
    assert system._inverted_file(database[:2]) is not first


def test_sift_he_needs_codebook():
    with pytest.raises(ValueError, match="--codebook_training_dataset"):
        make_system("sift_he")


def test_vocabulary_saved_and_reused(tmp_path, synthetic_images, monkeypatch):
    paths = []
    for number, image in enumerate(synthetic_images[:4]):
        path = str(tmp_path / f"train_{number}.png")
        images.save_image(path, image)
        paths.append(path)
    cache_dir = str(tmp_path / "vocabularies")
    config = vocabulary.VocabularyConfig(n_words=8, n_iterations=5)
    trained = vocabulary.load_or_train_vocabulary(paths, "synthetic", sift.SiftConfig(), config, cache_dir)
    saved = os.listdir(cache_dir)
    assert len(saved) == 1
    assert not any(name.startswith(".") for name in saved)

    def fail_training(*args, **kwargs):
        raise AssertionError("the vocabulary was trained again instead of loaded")

    monkeypatch.setattr(vocabulary, "train_vocabulary", fail_training)
    loaded = vocabulary.load_or_train_vocabulary(paths, "synthetic", sift.SiftConfig(), config, cache_dir)
    assert loaded.fingerprint() == trained.fingerprint()

    # Another setting gets another file, so it must train.
    with pytest.raises(AssertionError, match="trained again"):
        vocabulary.load_or_train_vocabulary(paths, "synthetic", sift.SiftConfig(), vocabulary.VocabularyConfig(
            n_words=8, n_iterations=5, projection_seed=1), cache_dir)
