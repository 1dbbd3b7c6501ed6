"""The GeM retrieval network: backbone, GeM pooling, L2 normalisation and an optional whitening layer.

This is cirtorch's `ImageRetrievalNet` for global GeM descriptors:
descriptor = l2n(GeM(features(x))), followed by l2n(whiten(.)) when the network has
a whitening layer. A learned whitening stored apart from the network (cirtorch
`meta['Lw']`) is applied after extraction, see `LearnedWhitening`.

References:
  Radenović, Tolias and Chum, "Fine-tuning CNN Image Retrieval with No Human
  Annotation", TPAMI 2018.
"""

import dataclasses
import functools
from typing import Any

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from pire_jax.layers import functional
from pire_jax.models.architectures import get_architecture
from pire_jax.models.input_convention import InputConvention

DEFAULT_GEM_P = 3.0  # Initial GeM exponent of Radenović et al. 2018, used when a checkpoint has none.


class GeM(nn.Module):
    """GeM pooling with its exponent as a parameter `p` of shape (1,), as cirtorch stores it."""

    p_init: float = DEFAULT_GEM_P

    @nn.compact
    def __call__(self, feature_map: jnp.ndarray) -> jnp.ndarray:
        p = self.param("p", nn.initializers.constant(self.p_init), (1,), jnp.float32)
        return functional.gem(feature_map, p)


class GeMNetwork(nn.Module):
    """Backbone `features`, GeM pooling `pool`, l2n, and optionally a whitening layer `whiten` and l2n."""

    features: nn.Module
    whitening_dim: int | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        descriptors = functional.l2n(GeM(name="pool")(self.features(x)))
        if self.whitening_dim:
            # cirtorch's `whiten` is nn.Linear(dim, whitening_dim, bias=True): weight P, bias -P m.
            descriptors = functional.l2n(nn.Dense(self.whitening_dim, name="whiten")(descriptors))
        return descriptors

    def feature_map(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.features(x)


@dataclasses.dataclass(frozen=True)
class NetworkSpec:
    """Everything that fixes the computation of a network except its weights (hashable, so usable as a jit static argument)."""

    arch: str
    input_convention: InputConvention
    whitening_dim: int | None = None

    def build_module(self) -> GeMNetwork:
        return _build_module(self)


@functools.lru_cache(maxsize=None)
def _build_module(spec: NetworkSpec) -> GeMNetwork:
    architecture = get_architecture(spec.arch)
    return GeMNetwork(features=architecture.build_features(), whitening_dim=spec.whitening_dim)


@functools.lru_cache(maxsize=None)
def expected_param_shapes(spec: NetworkSpec) -> dict[tuple[str, ...], tuple[int, ...]]:
    """Return the shape of every variable of the network, keyed by its path in the variables dict."""
    dummy_input = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(spec.build_module().init, jax.random.PRNGKey(0), dummy_input)
    flat = traverse_util.flatten_dict(jax.tree_util.tree_map(lambda leaf: leaf.shape, shapes, is_leaf=_is_shape_struct))
    return {path: tuple(shape) for path, shape in flat.items()}


def _is_shape_struct(value: Any) -> bool:
    return isinstance(value, jax.ShapeDtypeStruct)


def check_params(spec: NetworkSpec, params: Any, source: str) -> None:
    """Raise ValueError listing every missing, unexpected and mis-shaped variable of `params` for `spec`."""
    expected = expected_param_shapes(spec)
    actual = {path: tuple(np.shape(value)) for path, value in traverse_util.flatten_dict(params).items()}

    missing = sorted("/".join(path) for path in expected.keys() - actual.keys())
    unexpected = sorted("/".join(path) for path in actual.keys() - expected.keys())
    misshaped = sorted(
        f"{'/'.join(path)}: expected {expected[path]}, got {actual[path]}"
        for path in expected.keys() & actual.keys()
        if expected[path] != actual[path]
    )
    if missing or unexpected or misshaped:
        raise ValueError(
            f"Invalid parameters for a {spec.arch} GeM network (whitening_dim={spec.whitening_dim}) from {source}:"
            f" {len(missing)} missing {missing}, {len(unexpected)} unexpected {unexpected},"
            f" {len(misshaped)} with the wrong shape {misshaped}."
        )


@dataclasses.dataclass(frozen=True, eq=False)
class WhiteningTransform:
    """One learned whitening l2n(P (x - m)): mean m (D,) and projection P (D_out, D), float32."""

    mean: np.ndarray
    projection: np.ndarray

    def __post_init__(self):
        if self.mean.ndim != 1 or self.projection.ndim != 2 or self.projection.shape[1] != self.mean.shape[0]:
            raise ValueError(
                f"Invalid learned whitening: mean of shape {self.mean.shape} and projection of shape "
                f"{self.projection.shape}; expected (D,) and (D_out, D)."
            )

    def apply(self, descriptors: jnp.ndarray) -> jnp.ndarray:
        """Whiten and L2-normalise descriptors (N, D) into (N, D_out)."""
        return functional.apply_learned_whitening(
            descriptors, jnp.asarray(self.mean, jnp.float32), jnp.asarray(self.projection, jnp.float32)
        )


@dataclasses.dataclass(frozen=True, eq=False)
class LearnedWhitening:
    """A learned whitening for single-scale and for multi-scale descriptors (cirtorch `meta['Lw'][name]`).

    Attributes:
      name: whitening training set, e.g. "retrieval-SfM-120k", or "" when unnamed.
      single_scale: transform for single-scale descriptors (cirtorch 'ss'), or None.
      multi_scale: transform for multi-scale descriptors (cirtorch 'ms'), or None.
    """

    name: str
    single_scale: WhiteningTransform | None
    multi_scale: WhiteningTransform | None

    def for_extraction(self, multiscale: bool) -> WhiteningTransform:
        """Return the transform cirtorch uses for single- or multi-scale extraction."""
        transform = self.multi_scale if multiscale else self.single_scale
        if transform is None:
            kind = "multi-scale ('ms')" if multiscale else "single-scale ('ss')"
            raise ValueError(
                f"The learned whitening {self.name!r} has no {kind} transform; "
                f"extract {'single' if multiscale else 'multi'}-scale descriptors or turn the learned whitening off."
            )
        return transform


@dataclasses.dataclass(frozen=True, eq=False)
class RetrievalNetwork:
    """A GeM retrieval network with its weights, input convention and optional learned whitening.

    `apply(params, x)` is pure: it maps network input (N, H, W, 3) float32, in the units
    of `input_convention`, to L2-normalised descriptors (N, descriptor_dim). It can be
    jit-compiled and differentiated with respect to `x`.

    Attributes:
      spec: architecture, input convention and whitening layer size.
      params: Flax variables {"params": ..., "batch_stats": ...}; GeM's p is
        `params["params"]["pool"]["p"]`.
      learned_whitening: whitening to apply after extraction, or None.
      metadata: JSON-serialisable facts about the weights' origin (source format,
        source file and its sha256).
      checkpoint_sha256: sha256 of the converted file the network was loaded from, or
        None for a network built from parameters in memory.
    """

    spec: NetworkSpec
    params: Any
    learned_whitening: LearnedWhitening | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    checkpoint_sha256: str | None = None

    @classmethod
    def from_params(
        cls,
        arch: str,
        params: Any,
        input_convention: InputConvention,
        learned_whitening: LearnedWhitening | None = None,
        metadata: dict[str, Any] | None = None,
        checkpoint_sha256: str | None = None,
    ) -> "RetrievalNetwork":
        """Build a network from Flax variables, checking every name and shape.

        The whitening layer size is read from `params["params"]["whiten"]` when present.
        """
        whiten = params.get("params", {}).get("whiten")
        whitening_dim = int(np.shape(whiten["kernel"])[1]) if whiten is not None and "kernel" in whiten else None
        spec = NetworkSpec(arch=arch, input_convention=input_convention, whitening_dim=whitening_dim)
        check_params(spec, params, source="the given parameters")

        device_params = jax.tree_util.tree_map(lambda value: jnp.asarray(value, jnp.float32), params)
        return cls(
            spec=spec,
            params=device_params,
            learned_whitening=learned_whitening,
            metadata=dict(metadata or {}),
            checkpoint_sha256=checkpoint_sha256,
        )

    @property
    def arch(self) -> str:
        return self.spec.arch

    @property
    def input_convention(self) -> InputConvention:
        return self.spec.input_convention

    @property
    def gem_p(self) -> float:
        """GeM exponent p of the stored parameters."""
        return float(np.asarray(self.params["params"]["pool"]["p"]).reshape(()))

    @property
    def descriptor_dim(self) -> int:
        """Length of the descriptors `apply` returns (before any learned whitening)."""
        return self.spec.whitening_dim or get_architecture(self.spec.arch).feature_dim

    def apply(self, params: Any, x: jnp.ndarray) -> jnp.ndarray:
        """Compute L2-normalised descriptors (N, descriptor_dim) of network input x (N, H, W, 3) float32."""
        _check_network_input(x)
        return self.spec.build_module().apply(params, x)

    def feature_map(self, params: Any, x: jnp.ndarray) -> jnp.ndarray:
        """Compute the backbone activations (N, h, w, C) of network input x (N, H, W, 3) float32."""
        _check_network_input(x)
        return self.spec.build_module().apply(params, x, method=GeMNetwork.feature_map)


def _check_network_input(x: jnp.ndarray) -> None:
    chex.assert_rank(x, 4)
    chex.assert_axis_dimension(x, 3, 3)
    chex.assert_type(x, jnp.float32)
