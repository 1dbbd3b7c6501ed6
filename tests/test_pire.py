"""The PIRE attack on a real VGG16-GeM architecture (random weights, small images)."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pire_jax.attacks import pire_outputs
from pire_jax.attacks.pire import pire_attack, to_normalised_units
from pire_jax.attacks.pire_config import PAPER_LEARNING_RATE_NORMALISED, PireConfig, paper_config, tuned_config
from pire_jax.models import CAFFE_BGR, IMAGENET_RGB, RetrievalNetwork
from pire_jax.models.retrieval_network import NetworkSpec

HEIGHT, WIDTH = 32, 48


def _random_network(convention):
    """VGG16-GeM with He-scaled random kernels, so activations keep their scale through 13 ReLUs.

    Flax's default LeCun initialisation halves the activation variance at every ReLU,
    which leaves GeM with values at its clamp and gradients near float noise.
    """
    spec = NetworkSpec(arch="vgg16", input_convention=convention)
    variables = spec.build_module().init(jax.random.PRNGKey(0), jnp.zeros((1, HEIGHT, WIDTH, 3), jnp.float32))
    variables = jax.tree_util.tree_map_with_path(
        lambda path, value: value * np.sqrt(2.0) if path[-1].key == "kernel" else value, variables
    )
    return RetrievalNetwork.from_params("vgg16", variables, convention)


@pytest.fixture(scope="module")
def network():
    return _random_network(IMAGENET_RGB)


@pytest.fixture(scope="module")
def queries():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (3, HEIGHT, WIDTH, 3), dtype=np.uint8)
    images[0, :4] = 0  # Dark and bright rows, so the valid-range clip matters.
    images[0, 4:8] = 255
    return images


def _keys(count, seed=1):
    return jax.random.split(jax.random.PRNGKey(seed), count)


CONFIG = tuned_config(steps=6, save_steps=(1, 6))


@pytest.fixture(scope="module")
def batched_result(network, queries):
    return pire_attack(network.apply, network.input_convention, network.params, queries, _keys(3), CONFIG)


def test_perturbation_stays_in_budget(batched_result):
    perturbations = np.asarray(batched_result.perturbations)
    assert perturbations.shape == (2, 3, HEIGHT, WIDTH, 3)
    for channel in range(3):
        assert np.abs(perturbations[..., channel]).max() <= CONFIG.eps[channel] * (1 + 1e-5)


def test_perturbation_keeps_image_in_range(batched_result, queries):
    perturbed = queries[None].astype(np.float32) + np.asarray(batched_result.perturbations)
    assert perturbed.min() >= -1e-3
    assert perturbed.max() <= 255 + 1e-3


def test_objective_grows_over_steps(batched_result):
    objectives = np.asarray(batched_result.objectives)
    assert np.all(objectives[1] > objectives[0])


PAPER_SHORT = paper_config(steps=4, save_steps=(2, 4))


def _in_normalised_units(perturbations):
    return np.asarray(to_normalised_units(jnp.asarray(perturbations)))


def _assert_agree_up_to_rounding(actual, expected):
    """Check perturbations (normalised units) of two runs that differ only in float rounding.

    Batch sizes 3 and 1, and the Python and fori loops, compile to different
    convolution kernels. Where a gradient element is near zero, Adam's step
    g / (sqrt(v) + eps) turns its rounding into a step of either sign. So a few
    elements may move apart by up to 2 lr, and every other one agrees within 1e-5.
    """
    difference = np.abs(np.asarray(actual) - np.asarray(expected))
    far = difference > 1e-5
    assert far.mean() <= 0.002, f"{far.sum()} of {far.size} elements differ by more than 1e-5"
    assert difference.max() <= 2 * PAPER_LEARNING_RATE_NORMALISED


def test_batched_equals_one_by_one(network, queries):
    keys = _keys(3)
    batched = pire_attack(network.apply, network.input_convention, network.params, queries, keys, PAPER_SHORT)
    for index in range(3):
        alone = pire_attack(network.apply, network.input_convention, network.params, queries[index : index + 1], keys[index : index + 1], PAPER_SHORT)
        _assert_agree_up_to_rounding(_in_normalised_units(alone.perturbations[:, 0]), _in_normalised_units(batched.perturbations[:, index]))


def test_batch_companions_do_not_matter(network, queries, batched_result):
    # Same batch size, other companions, other position: bit-identical for query 1.
    keys = _keys(3)
    companions = np.stack([queries[1], 255 - queries[0], queries[2][::-1]])
    moved = pire_attack(network.apply, network.input_convention, network.params, companions, keys[np.array([1, 0, 2])], CONFIG)
    np.testing.assert_array_equal(np.asarray(moved.perturbations[:, 0]), np.asarray(batched_result.perturbations[:, 1]))


def test_same_key_bit_identical(network, queries, batched_result):
    again = pire_attack(network.apply, network.input_convention, network.params, queries, _keys(3), CONFIG)
    np.testing.assert_array_equal(np.asarray(again.perturbations), np.asarray(batched_result.perturbations))


def test_other_key_differs(network, queries, batched_result):
    other = pire_attack(network.apply, network.input_convention, network.params, queries, _keys(3, seed=2), CONFIG)
    assert np.abs(np.asarray(other.perturbations) - np.asarray(batched_result.perturbations)).max() > 0.1


def test_fori_loop_matches_python_loop(network, queries):
    python_loop = pire_attack(network.apply, network.input_convention, network.params, queries, _keys(3), PAPER_SHORT)
    in_jit = pire_attack(network.apply, network.input_convention, network.params, queries, _keys(3), dataclasses.replace(PAPER_SHORT, loop="fori"))
    _assert_agree_up_to_rounding(_in_normalised_units(in_jit.perturbations), _in_normalised_units(python_loop.perturbations))


def test_paper_preset_in_normalised_units():
    config = paper_config()
    eps_network = np.asarray(IMAGENET_RGB.perturbation_to_network(jnp.asarray(config.eps)))
    learning_rate_network = np.asarray(IMAGENET_RGB.perturbation_to_network(jnp.asarray(config.learning_rate)))
    np.testing.assert_allclose(eps_network, 10.0 / 255.0, rtol=1e-6)
    np.testing.assert_allclose(learning_rate_network, 1e-4, rtol=1e-6)
    assert config.steps == 500
    assert not config.clip_to_valid_range
    assert config.initial_fraction_of_eps == 1.0


def test_tuned_preset_in_normalised_units():
    config = tuned_config()
    eps_network = np.asarray(IMAGENET_RGB.perturbation_to_network(jnp.asarray(config.eps)))
    learning_rate_network = np.asarray(IMAGENET_RGB.perturbation_to_network(jnp.asarray(config.learning_rate)))
    # Tuned: 0.9 of the released code's eps (10/255), Adam step 0.05 of that budget.
    np.testing.assert_allclose(eps_network, 0.9 * 10.0 / 255.0, rtol=1e-6)
    np.testing.assert_allclose(learning_rate_network, 0.05 * 0.9 * 10.0 / 255.0, rtol=1e-6)
    np.testing.assert_allclose(config.eps, (2.061, 2.016, 2.025), rtol=1e-9)
    assert config.steps == 50
    assert config.clip_to_valid_range
    assert config.initial_fraction_of_eps == 0.1


def test_caffe_network_budget_in_grey_levels(queries):
    network = _random_network(CAFFE_BGR)
    config = PireConfig(steps=2, eps=(1.0, 2.0, 3.0), learning_rate=(0.5, 0.5, 0.5), save_steps=(2,))
    result = pire_attack(network.apply, network.input_convention, network.params, queries[:1], _keys(1), config)
    perturbation = np.asarray(result.perturbations)[0, 0]
    # Budgets are per RGB channel in grey levels, whatever the network's channel order.
    for channel, eps in enumerate(config.eps):
        assert np.abs(perturbation[..., channel]).max() == pytest.approx(eps, rel=1e-5)


def test_pire_rejects_key_count(network, queries):
    with pytest.raises(ValueError, match="one key per image"):
        pire_attack(network.apply, network.input_convention, network.params, queries, _keys(2), CONFIG)


def test_config_rejects_bad_save_steps():
    with pytest.raises(ValueError, match="end at steps"):
        PireConfig(steps=10, save_steps=(5,))
    with pytest.raises(ValueError, match="increasing"):
        PireConfig(steps=10, save_steps=(10, 5))


def test_times10_output_formula(queries, batched_result):
    image = queries[1]
    perturbation = np.asarray(batched_result.perturbations)[1, 1]
    expected = np.clip(np.rint(image.astype(np.float64) + 10.0 * perturbation), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(pire_outputs.adversarial_image(image, perturbation, "times10"), expected)


def test_refined_output_formula(queries, batched_result):
    image = queries[1]
    perturbation = np.asarray(batched_result.perturbations)[1, 1].astype(np.float64)
    std = np.array([0.229, 0.224, 0.225])
    normalised = perturbation / (255.0 * std)
    refined_normalised = np.ceil(np.abs(normalised) * 256.0) * np.sign(normalised) * 0.032
    expected = np.clip(np.rint(image + refined_normalised * 255.0 * std), 0, 255).astype(np.uint8)
    adversarial = pire_outputs.adversarial_image(image, perturbation, "refined")
    np.testing.assert_array_equal(adversarial, expected)
    assert adversarial.dtype == np.uint8
    assert np.any(adversarial != image)


def test_minimal_output_survives_rounding():
    image = np.full((4, 4, 3), 100, dtype=np.uint8)
    perturbation = np.zeros((4, 4, 3))
    perturbation[0, 0] = (0.2, -0.3, 1.6)
    perturbation[1, 1] = (-2.4, 0.0, 0.49)
    adversarial = pire_outputs.adversarial_image(image, perturbation, "minimal").astype(int) - 100
    np.testing.assert_array_equal(adversarial[0, 0], [1, -1, 2])
    np.testing.assert_array_equal(adversarial[1, 1], [-2, 0, 1])
    assert np.count_nonzero(adversarial) == 5


def test_outputs_reject_unknown_rule(queries):
    with pytest.raises(ValueError, match="output rule"):
        pire_outputs.adversarial_image(queries[0], np.zeros(queries[0].shape), "times100")


def test_initial_perturbations_replace_random_start(network, queries):
    start = np.full(queries[:1].shape, 1.0, np.float32)
    config = PireConfig(steps=1, learning_rate=(1e-6, 1e-6, 1e-6), save_steps=(1,))
    result = pire_attack(network.apply, network.input_convention, network.params, queries[:1], _keys(1), config,
                         initial_perturbations=start)
    np.testing.assert_allclose(np.asarray(result.perturbations)[0, 0], start[0], atol=1e-4)


def test_initial_fraction_bounds_v0(network, queries):
    config = PireConfig(steps=1, learning_rate=(1e-6, 1e-6, 1e-6), save_steps=(1,), initial_fraction_of_eps=0.25)
    result = pire_attack(network.apply, network.input_convention, network.params, queries[1:2], _keys(1), config)
    largest = np.abs(np.asarray(result.perturbations)[0, 0]).max(axis=(0, 1))
    # Uniform in [-eps / 4, eps / 4]: over 1,536 draws per channel the largest lies near the bound.
    np.testing.assert_array_less(largest, 0.25 * np.asarray(config.eps) + 1e-4)
    np.testing.assert_array_less(0.24 * np.asarray(config.eps), largest)


def test_config_rejects_bad_initial_fraction():
    with pytest.raises(ValueError, match="initial_fraction_of_eps"):
        PireConfig(initial_fraction_of_eps=0.0)
