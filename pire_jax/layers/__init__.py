"""Pure layers of the retrieval networks: GeM pooling, L2 normalisation, whitening, bilinear resize."""

from pire_jax.layers.functional import apply_learned_whitening, gem, l2n
from pire_jax.layers.resize import resize_bilinear, scaled_size

__all__ = ["apply_learned_whitening", "gem", "l2n", "resize_bilinear", "scaled_size"]
