"""Single- and multi-scale GeM descriptors of network input, as a pure function of the parameters.

Multi-scale descriptors follow cirtorch's `extract_ms`: the network input is
resized bilinearly to each scale (scale 1 is the input itself), each scaled input
gets its L2-normalised descriptor, and the descriptors are combined as

    l2n( (mean over scales of desc^q)^(1/q) ),

with q = GeM's p when there is more than one scale and the network has no whitening
layer, and q = 1 otherwise. q is a constant (no gradient flows into p), as cirtorch
reads it with `.item()`.

References:
  Radenović, Tolias and Chum, "Fine-tuning CNN Image Retrieval with No Human
  Annotation", TPAMI 2018, section 3.4 (multi-scale representation).
"""

import math
from typing import Any, Sequence

import chex
import jax
import jax.numpy as jnp

from pire_jax.layers import functional
from pire_jax.layers.resize import resize_bilinear
from pire_jax.models.retrieval_network import NetworkSpec

SINGLE_SCALE = (1.0,)
# cirtorch's default multi-scale setting `ms = [1, 1/2**(1/2), 1/2]`.
MULTI_SCALES = (1.0, 1.0 / math.sqrt(2.0), 0.5)


def compute_descriptors(
    spec: NetworkSpec, params: Any, network_input: jnp.ndarray, scales: Sequence[float] = SINGLE_SCALE
) -> jnp.ndarray:
    """Compute GeM descriptors of network input at one or several scales.

    Pure, jit-able (with `spec` and `scales` static) and differentiable with respect
    to `network_input` and `params`.

    Args:
      spec: the network (`RetrievalNetwork.spec`).
      params: its Flax variables (`RetrievalNetwork.params`).
      network_input: float32 (N, H, W, 3) in the network's input units.
      scales: resize factors applied to the network input.

    Returns:
      float32 (N, D) L2-normalised descriptors.
    """
    chex.assert_rank(network_input, 4)
    scales = tuple(float(scale) for scale in scales)
    if not scales:
        raise ValueError("No scales given; expected at least one, e.g. (1.0,).")
    module = spec.build_module()
    if scales == SINGLE_SCALE:
        return module.apply(params, network_input)

    exponent = jnp.float32(1.0)
    if len(scales) > 1 and not spec.whitening_dim:
        exponent = jax.lax.stop_gradient(jnp.reshape(params["params"]["pool"]["p"], ()))

    total = None
    for scale in scales:
        scaled_input = network_input if scale == 1.0 else resize_bilinear(network_input, scale)
        powered = module.apply(params, scaled_input) ** exponent
        total = powered if total is None else total + powered
    combined = (total / len(scales)) ** (1.0 / exponent)
    return functional.l2n(combined)
