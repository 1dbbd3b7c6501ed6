"""Inverted file over visual words with Hamming Embedding scoring.

For each visual word the file lists the database features assigned to it (image id and
64-bit signature). A query only reads the lists of its own words, so its cost grows
with the number of postings it touches, not with the collection size.

Score of database image d for query q (Jegou et al., ECCV 2008):

    s(q, d) = sum over matching pairs (i in q, j in d, same word w) of f(i, j) idf(w)^2
              / (||q|| ||d||)

where idf(w) = log(N / N_w) over the N database images (N_w of them contain w), ||.||
is the L2 norm of the image's tf-idf bag-of-words vector, and a pair matches when the
Hamming distance h of the signatures is at most the threshold. f is 1, or
exp(-h^2 / sigma^2) with Gaussian weighting. Without a threshold every same-word pair
matches with f = 1, which is the cosine similarity of tf-idf vectors (plain BoW).
"""

import dataclasses
from typing import Sequence

import numpy as np

from pire_jax.local_features import hamming_embedding

WEIGHTINGS = ("none", "gaussian")
# Touched postings scored at a time. Temporaries take about 60 bytes per touched posting
# (an estimate from the array dtypes), so about 125 MB.
MAX_POSTINGS_PER_CHUNK = 1 << 21


@dataclasses.dataclass(frozen=True)
class MatchingConfig:
    """Matching rule and match weight of same-word feature pairs.

    Attributes:
      hamming_threshold: a pair matches when its Hamming distance is at most this
        (0..64); None matches every same-word pair (plain bag of words).
      weighting: "none" (each match counts 1) or "gaussian" (exp(-h^2 / sigma^2)).
      sigma: width of the Gaussian weighting, in bits.
      burstiness: apply the intra-image burstiness normalisation of Jegou, Douze and
        Schmid (CVPR 2009): a match m of query feature i in image d counts
        m * sqrt(m / M), where M sums the matches of i in d.
    """

    hamming_threshold: int | None = hamming_embedding.HAMMING_THRESHOLD
    weighting: str = "none"
    sigma: float = hamming_embedding.GAUSSIAN_SIGMA
    burstiness: bool = False

    def __post_init__(self):
        if self.hamming_threshold is not None and not 0 <= self.hamming_threshold <= hamming_embedding.SIGNATURE_BITS:
            raise ValueError(
                f"Invalid Hamming threshold {self.hamming_threshold}; expected 0..{hamming_embedding.SIGNATURE_BITS}."
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"Invalid HE weighting {self.weighting!r}; expected one of {WEIGHTINGS}.")
        if self.sigma <= 0:
            raise ValueError(f"Invalid HE Gaussian sigma {self.sigma}; expected a positive number of bits.")


@dataclasses.dataclass(frozen=True)
class InvertedFile:
    """Postings grouped by visual word, with idf weights and image norms.

    Attributes:
      word_offsets: int64 (n_words + 1,); postings of word w are rows
        word_offsets[w]:word_offsets[w + 1].
      posting_images: int32 (n_postings,), database image of each posting.
      posting_signatures: uint64 (n_postings,), its Hamming Embedding signature.
      idf: float64 (n_words,), log(N / N_w); 0 for words absent from the database.
      image_norms: float64 (n_images,), L2 norm of each image's tf-idf vector.
    """

    word_offsets: np.ndarray
    posting_images: np.ndarray
    posting_signatures: np.ndarray
    idf: np.ndarray
    image_norms: np.ndarray

    @property
    def n_words(self) -> int:
        return self.word_offsets.shape[0] - 1

    @property
    def n_images(self) -> int:
        return self.image_norms.shape[0]


def tfidf_norm(words: np.ndarray, idf: np.ndarray) -> float:
    """Return the L2 norm of the tf-idf vector of one image's words (raw term counts)."""
    counts = np.bincount(np.asarray(words, dtype=np.int64), minlength=idf.shape[0])
    return float(np.sqrt(((counts * idf) ** 2).sum()))


def build_inverted_file(
    words_per_image: Sequence[np.ndarray], signatures_per_image: Sequence[np.ndarray], n_words: int
) -> InvertedFile:
    """Index the database features by visual word.

    Args:
      words_per_image: one int array (n_i,) of word indices per database image.
      signatures_per_image: one np.uint64 array (n_i,) per database image.
      n_words: codebook size.

    Returns:
      The inverted file.
    """
    if len(words_per_image) != len(signatures_per_image):
        raise ValueError(
            f"Got {len(words_per_image)} word arrays but {len(signatures_per_image)} signature arrays; expected one "
            "of each per database image."
        )
    n_images = len(words_per_image)
    lengths = np.array([len(words) for words in words_per_image], dtype=np.int64)
    for image, (words, signatures) in enumerate(zip(words_per_image, signatures_per_image)):
        if len(words) != len(signatures):
            raise ValueError(f"Database image {image}: {len(words)} words but {len(signatures)} signatures.")
    all_words = np.concatenate([np.asarray(words, np.int64) for words in words_per_image] + [np.zeros(0, np.int64)])
    if all_words.size and (all_words.min() < 0 or all_words.max() >= n_words):
        raise ValueError(f"Invalid word index in the database: expected 0..{n_words - 1}.")
    all_signatures = np.concatenate(
        [np.asarray(signatures, np.uint64) for signatures in signatures_per_image] + [np.zeros(0, np.uint64)]
    )
    all_images = np.repeat(np.arange(n_images, dtype=np.int32), lengths)

    order = np.argsort(all_words, kind="stable")
    word_counts = np.bincount(all_words, minlength=n_words)
    word_offsets = np.concatenate([[0], np.cumsum(word_counts)]).astype(np.int64)

    # N_w counts images, not features: deduplicate (word, image) pairs first.
    pairs = np.unique(all_words * max(n_images, 1) + all_images)
    images_per_word = np.bincount(pairs // max(n_images, 1), minlength=n_words)
    with np.errstate(divide="ignore"):
        idf = np.where(images_per_word > 0, np.log(max(n_images, 1) / np.maximum(images_per_word, 1)), 0.0)

    # Norms from (image, word) term counts, without a dense (n_images, n_words) matrix.
    image_word_keys, term_counts = np.unique(all_images.astype(np.int64) * n_words + all_words, return_counts=True)
    squared = (term_counts * idf[image_word_keys % n_words]) ** 2
    image_norms = np.sqrt(np.bincount(image_word_keys // n_words, weights=squared, minlength=n_images))

    return InvertedFile(
        word_offsets=word_offsets,
        posting_images=all_images[order],
        posting_signatures=all_signatures[order],
        idf=idf.astype(np.float64),
        image_norms=image_norms.astype(np.float64),
    )


def gather_postings(index: InvertedFile, query_words: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Return the posting rows touched by each query feature.

    Returns:
      (query_feature, posting_row): int64 arrays of equal length; posting_row indexes
      the inverted file's posting arrays and query_feature the query's features.
    """
    query_words = np.asarray(query_words, dtype=np.int64)
    starts = index.word_offsets[query_words]
    lengths = index.word_offsets[query_words + 1] - starts
    total = int(lengths.sum())
    query_feature = np.repeat(np.arange(query_words.shape[0], dtype=np.int64), lengths)
    # Row r of the output belongs to feature f = query_feature[r]. Its posting row is
    # starts[f] plus the position of r within f's run.
    run_starts = np.cumsum(lengths) - lengths
    posting_row = np.arange(total, dtype=np.int64) - np.repeat(run_starts - starts, lengths)
    return query_feature, posting_row


def score_query(
    index: InvertedFile,
    query_words: np.ndarray,
    query_signatures: np.ndarray,
    config: MatchingConfig,
    max_postings_per_chunk: int = MAX_POSTINGS_PER_CHUNK,
) -> np.ndarray:
    """Score every database image for one query.

    Args:
      index: the database's inverted file.
      query_words: int (m,) visual words of the query features.
      query_signatures: np.uint64 (m,) their signatures (ignored without a threshold).
      config: matching rule and weighting.
      max_postings_per_chunk: query features are processed in groups that touch at most
        about this many postings, which bounds the temporary memory. A feature whose
        posting list is longer than that forms its own group.

    Returns:
      float64 (n_images,); 0 for images without matches and for an empty query.
    """
    scores = np.zeros(index.n_images, dtype=np.float64)
    query_words = np.asarray(query_words, dtype=np.int64)
    query_signatures = np.asarray(query_signatures, dtype=np.uint64)
    if query_words.shape[0] == 0 or index.n_images == 0:
        return scores
    if query_words.min() < 0 or query_words.max() >= index.n_words:
        raise ValueError(f"Invalid query word index: expected 0..{index.n_words - 1}.")
    if config.hamming_threshold is not None and query_signatures.shape != query_words.shape:
        raise ValueError(
            f"Got {query_signatures.shape[0]} query signatures for {query_words.shape[0]} words; expected one each."
        )
    query_norm = tfidf_norm(query_words, index.idf)
    if query_norm == 0.0:
        return scores

    # Chunks never split a feature, so burstiness groups (feature, image) stay whole.
    touched = np.cumsum(index.word_offsets[query_words + 1] - index.word_offsets[query_words])
    chunk_ends = np.searchsorted(touched, np.arange(max_postings_per_chunk, touched[-1], max_postings_per_chunk))
    boundaries = np.unique(np.concatenate([[0], chunk_ends + 1, [query_words.shape[0]]]).clip(0, query_words.shape[0]))
    for start, end in zip(boundaries[:-1], boundaries[1:]):
        scores += _score_features(
            index, query_words[start:end], query_signatures[start:end] if config.hamming_threshold is not None else None,
            config,
        )

    norms = index.image_norms * query_norm
    return np.divide(scores, norms, out=np.zeros_like(scores), where=norms > 0)


def _score_features(
    index: InvertedFile, query_words: np.ndarray, query_signatures: np.ndarray | None, config: MatchingConfig
) -> np.ndarray:
    """Sum the match weights of some query features per database image (before normalisation)."""
    query_feature, posting_row = gather_postings(index, query_words)
    images = index.posting_images[posting_row].astype(np.int64)
    match_weights = index.idf[query_words[query_feature]] ** 2
    if config.hamming_threshold is not None:
        distances = hamming_embedding.hamming_distances(
            query_signatures[query_feature], index.posting_signatures[posting_row]
        )
        keep = distances <= config.hamming_threshold
        query_feature, images, match_weights, distances = (
            query_feature[keep], images[keep], match_weights[keep], distances[keep]
        )
        if config.weighting == "gaussian":
            match_weights = match_weights * hamming_embedding.gaussian_weights(distances, config.sigma)

    if config.burstiness and match_weights.size:
        # Total match weight of each (query feature, image) pair.
        # NOTE: implemented from the paper's description of intra-image burstiness and not
        # checked against the authors' code.
        keys = query_feature * index.n_images + images
        _, group = np.unique(keys, return_inverse=True)
        totals = np.bincount(group, weights=match_weights)[group]
        match_weights = match_weights * np.sqrt(match_weights / np.maximum(totals, 1e-300))

    return np.bincount(images, weights=match_weights, minlength=index.n_images)
