"""PIRE: Perturbations for Image Retrieval Error, a batched, jit-compiled JAX attack.

PIRE is unsupervised: it needs no labels, only the network f that turns an image into
a retrieval descriptor. It maximises how far the descriptor of the perturbed query
moves from the clean one,

    maximise ||f(x) - f(x + v)||_2^2   subject to   ||v||_inf <= eps,

with Adam steps on v, each followed by a projection (clip) of v into the L-infinity
ball. The clean descriptor f(x) is computed once under `stop_gradient`, and gradients
are taken with respect to v only. The released PyTorch code instead keeps the clean
image's graph and runs back through it at every step.

Images and budgets enter in grey levels. The attack optimises v in ImageNet-normalised
RGB units (grey levels / (255 * std_c)), the units of the released code, whatever the
network: Adam's eps then means the same for every network, so a preset behaves alike
on a Caffe-style VGG16 and a torchvision ResNet. The network's input is
`convention.to_network_input(x + v)`: its input convention is the only place where
grey levels become network input. A batch of equal-shape queries is attacked at once:
every per-query quantity (v, Adam state, clean descriptor, bounds) is vmapped, so each
query follows the trajectory it would follow alone, up to float rounding.

References:
  Z. Liu, Z. Zhao, M. Larson, "Who's Afraid of Adversarial Queries? The Impact of
  Image Modifications on Content-based Image Retrieval", ACM ICMR 2019 (Algorithm 1).
"""

import dataclasses
import functools
from typing import Any, Callable, NamedTuple

import chex
import jax
import jax.numpy as jnp
import optax

from pire_jax.attacks.pire_config import PireConfig
from pire_jax.models.input_convention import IMAGENET_STD_RGB, InputConvention

# Grey levels per unit of the optimisation variable, per RGB channel: 255 * ImageNet std.
GREY_LEVELS_PER_UNIT = tuple(255.0 * std for std in IMAGENET_STD_RGB)

# (params, network input (N, H, W, 3)) -> descriptors (N, D).
ApplyFn = Callable[[Any, jnp.ndarray], jnp.ndarray]
# Called from the Python loop as progress(step, objectives) after each step.
ProgressFn = Callable[[int, jnp.ndarray], None]


class PireResult(NamedTuple):
    """Output of `pire_attack`.

    Attributes:
      perturbations: float32 (S, B, H, W, 3), the perturbation v after each of the
        S = len(config.save_steps) saved iterations, RGB, in grey levels.
      objectives: float32 (S, B), ||f(x) - f(x + v)||^2 for those perturbations.
    """

    perturbations: jnp.ndarray
    objectives: jnp.ndarray


class _State(NamedTuple):
    """Per-batch attack state; v and its bounds in normalised units, images in grey levels."""

    perturbation: jnp.ndarray  # (B, H, W, 3)
    optimizer_state: Any
    clean_images: jnp.ndarray  # (B, H, W, 3) grey levels
    clean_descriptor: jnp.ndarray  # (B, D)
    lower: jnp.ndarray  # (B, H, W, 3) lowest allowed v
    upper: jnp.ndarray  # (B, H, W, 3) highest allowed v


def resolve_loop(config: PireConfig) -> str:
    """Return the loop form to use: the configured one, or for "auto" the fastest on this backend."""
    if config.loop != "auto":
        return config.loop
    return "python" if jax.default_backend() == "cpu" else "fori"


def to_normalised_units(grey_levels: jnp.ndarray) -> jnp.ndarray:
    """Convert RGB grey levels (..., 3) to the normalised units PIRE optimises in."""
    return jnp.asarray(grey_levels, jnp.float32) / jnp.asarray(GREY_LEVELS_PER_UNIT, jnp.float32)


def to_grey_levels(normalised: jnp.ndarray) -> jnp.ndarray:
    """Convert normalised units (..., 3) back to RGB grey levels."""
    return jnp.asarray(normalised, jnp.float32) * jnp.asarray(GREY_LEVELS_PER_UNIT, jnp.float32)


def _optimizer(config: PireConfig) -> optax.GradientTransformation:
    # Adam with a per-channel step size: optax scales the Adam direction by the
    # learning rate, which broadcasts over the last (channel) axis.
    learning_rate = to_normalised_units(jnp.asarray(config.learning_rate))
    return optax.adam(learning_rate=learning_rate, b1=config.adam_b1, b2=config.adam_b2, eps=config.adam_eps)


def _descriptor(apply_fn: ApplyFn, convention: InputConvention, params: Any, image: jnp.ndarray) -> jnp.ndarray:
    """Descriptor (D,) of one RGB image (H, W, 3) in grey levels."""
    return apply_fn(params, convention.to_network_input(image)[None])[0]


def _objective(apply_fn, convention, params, perturbation, clean_image, clean_descriptor) -> jnp.ndarray:
    perturbed = clean_image + to_grey_levels(perturbation)
    moved = _descriptor(apply_fn, convention, params, perturbed) - clean_descriptor
    return jnp.sum(moved**2)


def _init_state(apply_fn, convention, config, params, images, keys, initial_perturbations) -> _State:
    clean_images = jnp.asarray(images, jnp.float32)
    describe = functools.partial(_descriptor, apply_fn, convention, params)
    clean_descriptor = jax.lax.stop_gradient(jax.vmap(describe)(clean_images))

    # The L-infinity ball, optionally intersected with 0..255 for x + v.
    eps = to_normalised_units(jnp.asarray(config.eps))
    lower = jnp.broadcast_to(-eps, clean_images.shape)
    upper = jnp.broadcast_to(eps, clean_images.shape)
    if config.clip_to_valid_range:
        lower = jnp.maximum(lower, to_normalised_units(-clean_images))
        upper = jnp.minimum(upper, to_normalised_units(255.0 - clean_images))

    # v0 uniform in [-f * eps, f * eps] (per channel); the released code has f = 1.
    initial_eps = config.initial_fraction_of_eps * eps

    def initial_perturbation(key, low, high):
        return jax.random.uniform(key, low.shape, jnp.float32, minval=-initial_eps, maxval=initial_eps).clip(low, high)

    if initial_perturbations is None:
        perturbation = jax.vmap(initial_perturbation)(keys, lower, upper)
    else:
        perturbation = to_normalised_units(initial_perturbations).clip(lower, upper)
    optimizer_state = jax.vmap(_optimizer(config).init)(perturbation)
    return _State(perturbation, optimizer_state, clean_images, clean_descriptor, lower, upper)


def _step(apply_fn, convention, config, params, state: _State) -> tuple[_State, jnp.ndarray]:
    optimizer = _optimizer(config)

    def one_query(perturbation, optimizer_state, clean_image, clean_descriptor, lower, upper):
        objective, gradient = jax.value_and_grad(functools.partial(_objective, apply_fn, convention, params))(
            perturbation, clean_image, clean_descriptor
        )
        # optax minimises, and PIRE maximises the objective.
        updates, optimizer_state = optimizer.update(-gradient, optimizer_state, perturbation)
        perturbation = jnp.clip(optax.apply_updates(perturbation, updates), lower, upper)
        return perturbation, optimizer_state, objective

    perturbation, optimizer_state, objectives = jax.vmap(one_query)(
        state.perturbation, state.optimizer_state, state.clean_images, state.clean_descriptor, state.lower, state.upper
    )
    return state._replace(perturbation=perturbation, optimizer_state=optimizer_state), objectives


def _snapshot(apply_fn, convention, params, state: _State) -> tuple[jnp.ndarray, jnp.ndarray]:
    objectives = jax.vmap(functools.partial(_objective, apply_fn, convention, params))(
        state.perturbation, state.clean_images, state.clean_descriptor
    )
    return to_grey_levels(state.perturbation), objectives


_STATIC = ("apply_fn", "convention", "config")


@functools.partial(jax.jit, static_argnames=_STATIC)
def _init_jit(params, images, keys, initial_perturbations, *, apply_fn, convention, config):
    return _init_state(apply_fn, convention, config, params, images, keys, initial_perturbations)


@functools.partial(jax.jit, static_argnames=_STATIC, donate_argnames=("state",))
def _step_jit(params, state, *, apply_fn, convention, config):
    return _step(apply_fn, convention, config, params, state)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _snapshot_jit(params, state, *, apply_fn, convention, config):
    del config
    return _snapshot(apply_fn, convention, params, state)


@functools.partial(jax.jit, static_argnames=_STATIC)
def _attack_in_one_jit(params, images, keys, initial_perturbations, *, apply_fn, convention, config):
    """Run the whole attack in one compiled program, with the loop as fori_loop or scan."""
    state = _init_state(apply_fn, convention, config, params, images, keys, initial_perturbations)

    def body(_, current):
        return _step(apply_fn, convention, config, params, current)[0]

    snapshots, objectives, done = [], [], 0
    for save_step in config.save_steps:
        count = save_step - done
        if config.loop == "scan":
            state, _ = jax.lax.scan(lambda current, _: (body(0, current), None), state, None, length=count, unroll=min(config.scan_unroll, count))
        else:
            state = jax.lax.fori_loop(0, count, body, state)
        perturbation, objective = _snapshot(apply_fn, convention, params, state)
        snapshots.append(perturbation)
        objectives.append(objective)
        done = save_step
    return PireResult(jnp.stack(snapshots), jnp.stack(objectives))


def pire_attack(
    apply_fn: ApplyFn,
    convention: InputConvention,
    params: Any,
    images: jnp.ndarray,
    keys: jnp.ndarray,
    config: PireConfig,
    progress: ProgressFn | None = None,
    initial_perturbations: jnp.ndarray | None = None,
) -> PireResult:
    """Attack a batch of equal-shape queries with PIRE.

    The result depends only on (params, images, keys, config): the same keys give
    bit-identical perturbations, and query b gives the same perturbation whether it
    is attacked alone or in a batch (up to float rounding of batched convolutions).

    Args:
      apply_fn: pure descriptor function (params, network input (N, H, W, 3)) ->
        (N, D); must be hashable (a module-level function or a cached partial),
        because it is a static argument of the compiled attack.
      convention: the network's input convention (grey levels <-> network units).
      params: network parameters.
      images: uint8 or float (B, H, W, 3), RGB grey levels 0..255.
      keys: PRNG keys, one per query, shape (B, 2) (raw uint32) or (B,) (typed).
      config: attack settings; budgets and step sizes in grey levels.
      progress: called as progress(step, objectives (B,)) after each step when the
        loop runs from Python; ignored by the in-jit loops.
      initial_perturbations: optional v0 (B, H, W, 3) in grey levels, projected into
        the budget, in place of the uniform draw from `keys` (for comparisons with
        other implementations started from the same v0).

    Returns:
      A `PireResult` with the perturbations in grey levels at each of
      `config.save_steps`.
    """
    chex.assert_rank(images, 4)
    chex.assert_axis_dimension(images, -1, 3)
    if keys.shape[0] != images.shape[0]:
        raise ValueError(f"Invalid keys: {keys.shape[0]} keys for {images.shape[0]} images; pass one key per image.")
    if initial_perturbations is not None:
        chex.assert_shape(initial_perturbations, images.shape)
    static = dict(apply_fn=apply_fn, convention=convention, config=config)

    if resolve_loop(config) in ("fori", "scan"):
        if config.loop == "auto":
            static["config"] = dataclasses.replace(config, loop="fori")
        return _attack_in_one_jit(params, images, keys, initial_perturbations, **static)

    # The Python loop's programs do not depend on the number of steps, so they get a
    # config without it and compile once whatever T is.
    static["config"] = dataclasses.replace(config, steps=1, save_steps=(1,), loop="python")
    state = _init_jit(params, images, keys, initial_perturbations, **static)
    snapshots, objectives = [], []
    for step in range(1, config.steps + 1):
        state, step_objectives = _step_jit(params, state, **static)
        if progress is not None:
            progress(step, step_objectives)
        if step in config.save_steps:
            perturbation, objective = _snapshot_jit(params, state, **static)
            snapshots.append(perturbation)
            objectives.append(objective)
    return PireResult(jnp.stack(snapshots), jnp.stack(objectives))
