"""Hamming Embedding: 64-bit binary signatures that refine a visual word, and their distances.

A descriptor x assigned to word w gets bit b set when the b-th coordinate of P x is
above the median of that coordinate over the training descriptors of w. P is a random
orthogonal projection. Two descriptors of the same word match when the Hamming
distance of their signatures is at most a threshold.

References:
  H. Jegou, M. Douze, C. Schmid, "Hamming Embedding and Weak Geometric Consistency
  for Large Scale Image Search", ECCV 2008 (signatures, medians, threshold 24 of 64).
  H. Jegou, M. Douze, C. Schmid, "On the burstiness of visual elements", CVPR 2009
  (Gaussian weighting of the Hamming distance, sigma 16 for 64 bits).
"""

import numpy as np

SIGNATURE_BITS = 64  # Jegou et al. 2008; signatures are packed into one np.uint64
HAMMING_THRESHOLD = 24  # Jegou et al. 2008, 64-bit signatures
GAUSSIAN_SIGMA = 16.0  # Jegou et al. 2009, weight exp(-h^2 / sigma^2) for 64 bits

# Set bits per byte value, used when numpy has no np.bitwise_count (numpy < 2.0).
_POPCOUNT_TABLE = np.array([bin(value).count("1") for value in range(256)], dtype=np.uint8)


def make_projection(seed: int, n_bits: int = SIGNATURE_BITS, dimension: int = 128) -> np.ndarray:
    """Draw the random orthogonal projection P of Hamming Embedding.

    P is the first `n_bits` rows of the Q factor of the QR decomposition of a
    `dimension` x `dimension` matrix of standard Gaussian values drawn with `seed`.

    Returns:
      float32 (n_bits, dimension) with orthonormal rows.
    """
    if not 1 <= n_bits <= min(SIGNATURE_BITS, dimension):
        raise ValueError(f"Invalid number of signature bits {n_bits}; expected 1..{min(SIGNATURE_BITS, dimension)}.")
    gaussian = np.random.default_rng(seed).standard_normal((dimension, dimension))
    orthogonal, _ = np.linalg.qr(gaussian)
    return orthogonal[:n_bits].astype(np.float32)


def project(descriptors: np.ndarray, projection: np.ndarray) -> np.ndarray:
    """Return P x for each descriptor row, float32 (n, n_bits)."""
    return np.asarray(descriptors, dtype=np.float32) @ projection.T


def learn_medians(projected: np.ndarray, words: np.ndarray, n_words: int) -> np.ndarray:
    """Learn the per-word, per-bit median thresholds on projected training descriptors.

    Words without training descriptors get the median over all training descriptors.

    Args:
      projected: float32 (n, n_bits), `project` of the training descriptors.
      words: int (n,), their visual words.
      n_words: codebook size.

    Returns:
      float32 (n_words, n_bits).
    """
    projected = np.asarray(projected, dtype=np.float32)
    words = np.asarray(words, dtype=np.int64)
    if projected.ndim != 2 or words.shape != (projected.shape[0],):
        raise ValueError(f"Invalid shapes: projected {projected.shape}, words {words.shape}; expected (n, bits), (n,).")
    if projected.shape[0] == 0:
        raise ValueError("Cannot learn Hamming Embedding medians from zero training descriptors.")
    n_bits = projected.shape[1]
    medians = np.tile(np.median(projected, axis=0), (n_words, 1)).astype(np.float32)

    # Sort each column within its word groups. The groups keep their rows in every
    # column, so the median of word w is at the same rows in all columns.
    order = np.argsort(words, kind="stable")
    sorted_words = words[order]
    grouped = projected[order]
    present, starts, counts = np.unique(sorted_words, return_index=True, return_counts=True)
    for bit in range(n_bits):
        column_order = np.lexsort((grouped[:, bit], sorted_words))
        grouped[:, bit] = grouped[column_order, bit]
    lower = grouped[starts + (counts - 1) // 2]
    upper = grouped[starts + counts // 2]
    medians[present] = (lower + upper) / 2.0
    return medians


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack boolean (n, 64) into np.uint64 (n,); bit b of the integer is column b."""
    bits = np.asarray(bits, dtype=bool)
    if bits.ndim != 2 or bits.shape[1] != SIGNATURE_BITS:
        raise ValueError(f"Invalid bit array of shape {bits.shape}; expected (n, {SIGNATURE_BITS}).")
    packed = np.packbits(bits, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").reshape(-1).astype(np.uint64)


def compute_signatures(
    descriptors: np.ndarray, words: np.ndarray, projection: np.ndarray, medians: np.ndarray
) -> np.ndarray:
    """Compute 64-bit Hamming Embedding signatures.

    Args:
      descriptors: float (n, d).
      words: int (n,), visual word of each descriptor.
      projection: float32 (64, d), from `make_projection`.
      medians: float32 (n_words, 64), from `learn_medians`.

    Returns:
      np.uint64 (n,), bit b set when (P x)_b > medians[word, b].
    """
    if projection.shape[0] != SIGNATURE_BITS or medians.shape[1] != SIGNATURE_BITS:
        raise ValueError(
            f"Invalid projection {projection.shape} or medians {medians.shape}; expected {SIGNATURE_BITS} bits."
        )
    words = np.asarray(words, dtype=np.int64)
    if words.shape[0] == 0:
        return np.zeros((0,), np.uint64)
    bits = project(descriptors, projection) > medians[words]
    return pack_bits(bits)


def hamming_distances(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Count the differing bits of two np.uint64 signature arrays, element-wise (broadcasting).

    Returns:
      uint8 array of distances in 0..64.
    """
    difference = np.bitwise_xor(np.asarray(first, dtype=np.uint64), np.asarray(second, dtype=np.uint64))
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(difference).astype(np.uint8)
    as_bytes = np.ascontiguousarray(difference).view(np.uint8).reshape(difference.shape + (8,))
    return _POPCOUNT_TABLE[as_bytes].sum(axis=-1, dtype=np.uint8)


def gaussian_weights(distances: np.ndarray, sigma: float = GAUSSIAN_SIGMA) -> np.ndarray:
    """Weight matches by exp(-h^2 / sigma^2) of their Hamming distance h (float64)."""
    distances = np.asarray(distances, dtype=np.float64)
    return np.exp(-(distances**2) / sigma**2)
