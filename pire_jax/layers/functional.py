"""Pure functions behind the GeM retrieval network: GeM pooling, L2 normalisation and learned whitening.

They follow cirtorch (Radenović, Tolias and Chum, "Fine-tuning CNN Image Retrieval
with No Human Annotation", TPAMI 2018) numerically, so that descriptors of converted
cirtorch checkpoints match the PyTorch ones. Feature maps are NHWC.
"""

import chex
import jax.numpy as jnp

# cirtorch clamps activations at this value before the power in GeM, so that the
# gradient of x^p exists where ReLU returned 0.
GEM_EPS = 1e-6

# cirtorch adds this to the norm in l2n and in `whitenapply`, so a zero vector stays zero.
L2N_EPS = 1e-6


def gem(feature_map: jnp.ndarray, p: jnp.ndarray | float, eps: float = GEM_EPS) -> jnp.ndarray:
    """Pool a feature map with generalized mean (GeM) pooling.

    GeM(x) = (mean over H, W of max(x, eps)^p)^(1/p), per channel. p = 1 is average
    pooling and p -> infinity max pooling.

    Args:
      feature_map: float array (N, H, W, C), non-negative activations (after ReLU).
      p: GeM exponent, a scalar or an array of shape (1,) as cirtorch stores it.
      eps: lower clamp applied before the power.

    Returns:
      float array (N, C).

    References:
      Radenović, Tolias and Chum, TPAMI 2018, eq. 2.
    """
    chex.assert_rank(feature_map, 4)
    p = jnp.reshape(jnp.asarray(p, feature_map.dtype), ())

    clamped = jnp.maximum(feature_map, eps)
    pooled = jnp.mean(clamped**p, axis=(1, 2))
    return pooled ** (1.0 / p)


def l2n(vectors: jnp.ndarray, eps: float = L2N_EPS) -> jnp.ndarray:
    """Divide each row by its L2 norm plus `eps`, as cirtorch's `l2n` does.

    Args:
      vectors: float array (N, D).
      eps: added to the norm, so a zero row stays zero instead of becoming NaN.

    Returns:
      float array (N, D).
    """
    chex.assert_rank(vectors, 2)
    norms = jnp.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / (norms + eps)


def apply_learned_whitening(vectors: jnp.ndarray, mean: jnp.ndarray, projection: jnp.ndarray) -> jnp.ndarray:
    """Whiten descriptors with a learned whitening and L2-normalise them: l2n(P (x - m)).

    This is cirtorch's `whitenapply`, used for the whitening that cirtorch learns on
    retrieval-SfM-120k after fine-tuning and stores in the checkpoint's `meta['Lw']`.
    It is distinct from the whitening layer (`whiten`) inside some networks.

    Args:
      vectors: float array (N, D), the descriptors.
      mean: float array (D,), the mean m subtracted first.
      projection: float array (D_out, D), the projection P. D_out <= D keeps the
        first D_out whitened dimensions, as cirtorch's `dimensions` argument does.

    Returns:
      float array (N, D_out), rows of unit L2 norm.

    References:
      Radenović, Tolias and Chum, TPAMI 2018, section 3.3 (learned discriminative whitening).
    """
    chex.assert_rank([vectors, mean, projection], [2, 1, 2])
    chex.assert_equal_shape_suffix([vectors, mean], 1)
    if projection.shape[1] != vectors.shape[1]:
        raise ValueError(
            f"Invalid learned whitening: projection of shape {projection.shape} cannot apply to descriptors "
            f"of dimension {vectors.shape[1]}; the projection must have {vectors.shape[1]} columns."
        )
    whitened = (vectors - mean) @ projection.T
    return l2n(whitened)
