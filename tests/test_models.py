"""Input conventions, network construction and the converted-network file format."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import msgpack
import numpy as np
import pytest
from flax import serialization, traverse_util

from pire_jax.models import (
    CAFFE_BGR,
    IMAGENET_RGB,
    CheckpointError,
    InputConvention,
    LearnedWhitening,
    RetrievalNetwork,
    WhiteningTransform,
    file_sha256,
    load_network,
    save_network,
)
from pire_jax.models.retrieval_network import NetworkSpec, expected_param_shapes

CONVENTIONS = [IMAGENET_RGB, CAFFE_BGR]


def _random_image(seed, shape=(2, 9, 11, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_imagenet_input_matches_torchvision_formula():
    image = _random_image(0)

    expected = (image / 255.0 - np.asarray([0.485, 0.456, 0.406])) / np.asarray([0.229, 0.224, 0.225])
    network_input = np.asarray(IMAGENET_RGB.to_network_input(image))

    assert network_input.dtype == np.float32
    np.testing.assert_allclose(network_input, expected, atol=1e-5)


def test_caffe_input_is_bgr_minus_mean():
    image = _random_image(1)

    expected = image[..., ::-1].astype(np.float64) - np.asarray([103.939, 116.779, 123.68])
    network_input = np.asarray(CAFFE_BGR.to_network_input(image))

    np.testing.assert_allclose(network_input, expected, atol=1e-4)


@pytest.mark.parametrize("convention", CONVENTIONS, ids=lambda convention: convention.name)
def test_image_round_trip(convention):
    image = _random_image(2)

    back = np.asarray(convention.to_grey_levels(convention.to_network_input(image)))

    np.testing.assert_allclose(back, image.astype(np.float32), atol=1e-3)


@pytest.mark.parametrize("convention", CONVENTIONS, ids=lambda convention: convention.name)
def test_perturbation_round_trip(convention):
    perturbation = np.random.default_rng(3).normal(0, 3.0, (4, 5, 3)).astype(np.float32)

    back = np.asarray(convention.perturbation_to_grey_levels(convention.perturbation_to_network(perturbation)))

    np.testing.assert_allclose(back, perturbation, atol=1e-5)


@pytest.mark.parametrize("convention", CONVENTIONS, ids=lambda convention: convention.name)
def test_perturbation_is_input_difference(convention):
    image = _random_image(4).astype(np.float32)
    perturbation = np.random.default_rng(5).normal(0, 2.0, image.shape).astype(np.float32)

    difference = convention.to_network_input(image + perturbation) - convention.to_network_input(image)
    converted = convention.perturbation_to_network(perturbation)

    np.testing.assert_allclose(np.asarray(converted), np.asarray(difference), atol=1e-4)


def test_perturbation_factors_imagenet():
    for channel in range(3):
        unit = np.zeros(3, np.float32)
        unit[channel] = 1.0

        converted = np.asarray(IMAGENET_RGB.perturbation_to_network(unit))

        expected = np.zeros(3)
        expected[channel] = 1.0 / (255.0 * IMAGENET_RGB.std[channel])
        np.testing.assert_allclose(converted, expected, rtol=1e-6)
    np.testing.assert_allclose(IMAGENET_RGB.grey_levels_per_network_unit(), 255.0 * np.asarray(IMAGENET_RGB.std))


def test_perturbation_factors_caffe():
    for channel in range(3):
        unit = np.zeros(3, np.float32)
        unit[channel] = 1.0

        converted = np.asarray(CAFFE_BGR.perturbation_to_network(unit))

        expected = np.zeros(3)
        expected[2 - channel] = 1.0  # RGB channel c is BGR network channel 2 - c.
        np.testing.assert_array_equal(converted, expected)
    np.testing.assert_array_equal(CAFFE_BGR.grey_levels_per_network_unit(), np.ones(3))


def test_convention_under_jit():
    image = _random_image(6)

    traced = jax.jit(IMAGENET_RGB.to_network_input)(image)

    np.testing.assert_allclose(np.asarray(traced), np.asarray(IMAGENET_RGB.to_network_input(image)), atol=1e-6)


def test_convention_json_round_trip():
    for convention in CONVENTIONS:
        assert InputConvention.from_json(json.loads(json.dumps(convention.to_json()))) == convention


def test_convention_rejects_bad_fields():
    with pytest.raises(ValueError, match="permutation"):
        InputConvention("bad", (0, 0, 1), 255.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))
    with pytest.raises(ValueError, match="positive"):
        InputConvention("bad", (0, 1, 2), 255.0, (0.0, 0.0, 0.0), (1.0, 0.0, 1.0))
    with pytest.raises(AssertionError):
        IMAGENET_RGB.to_network_input(np.zeros((4, 4, 4), np.uint8))


def _parameter_count(spec, collection="params", top="features"):
    shapes = expected_param_shapes(spec)
    return sum(int(np.prod(shape)) for path, shape in shapes.items() if path[0] == collection and path[1] == top)


def test_parameter_counts_match_torchvision():
    # torchvision: resnet101 has 44,549,160 parameters, 2,049,000 of them in fc;
    # vgg16's features have 14,714,688.
    assert _parameter_count(NetworkSpec("resnet101", IMAGENET_RGB)) == 44_549_160 - 2_049_000
    assert _parameter_count(NetworkSpec("resnet50", IMAGENET_RGB)) == 25_557_032 - 2_049_000
    assert _parameter_count(NetworkSpec("vgg16", IMAGENET_RGB)) == 14_714_688


@pytest.mark.parametrize(
    "arch, height, width, expected",
    [
        ("resnet101", 97, 75, (1, 4, 3, 2048)),
        ("resnet101", 128, 96, (1, 4, 3, 2048)),
        ("vgg16", 97, 75, (1, 6, 4, 512)),
        ("vgg16", 240, 240, (1, 15, 15, 512)),
    ],
)
def test_feature_map_shapes_follow_torch_arithmetic(arch, height, width, expected):
    # Expected sizes from PyTorch's floor((n + 2 pad - k) / stride) + 1 at each layer.
    spec = NetworkSpec(arch, IMAGENET_RGB)
    variables = jax.eval_shape(spec.build_module().init, jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    network = RetrievalNetwork(spec=spec, params=variables)

    shape = jax.eval_shape(network.feature_map, variables, jax.ShapeDtypeStruct((1, height, width, 3), jnp.float32))

    assert shape.shape == expected


@pytest.fixture(scope="module")
def vgg_variables():
    spec = NetworkSpec("vgg16", IMAGENET_RGB, whitening_dim=64)
    variables = jax.jit(spec.build_module().init)(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32))
    return jax.tree_util.tree_map(np.asarray, variables)


@pytest.fixture(scope="module")
def vgg_network(vgg_variables):
    whitening = LearnedWhitening(
        name="toy-set",
        single_scale=WhiteningTransform(np.full(64, 0.01, np.float32), np.eye(32, 64, dtype=np.float32)),
        multi_scale=None,
    )
    return RetrievalNetwork.from_params("vgg16", vgg_variables, IMAGENET_RGB, learned_whitening=whitening)


def test_network_properties(vgg_network):
    assert vgg_network.arch == "vgg16"
    assert vgg_network.spec.whitening_dim == 64
    assert vgg_network.descriptor_dim == 64
    assert vgg_network.gem_p == pytest.approx(3.0)
    assert vgg_network.input_convention is IMAGENET_RGB
    assert vgg_network.checkpoint_sha256 is None


def test_apply_unit_norm_and_differentiable(vgg_network):
    image = _random_image(7, (2, 32, 48, 3))
    network_input = IMAGENET_RGB.to_network_input(image)

    descriptors = np.asarray(jax.jit(vgg_network.apply)(vgg_network.params, network_input))
    gradient = jax.jit(jax.grad(lambda x, params: jnp.sum(vgg_network.apply(params, x)[:, 0])))(
        network_input, vgg_network.params
    )

    assert descriptors.shape == (2, 64)
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-5)
    assert np.all(np.isfinite(np.asarray(gradient)))
    assert float(jnp.abs(gradient).max()) > 0.0


def test_apply_rejects_uint8_input(vgg_network):
    with pytest.raises(AssertionError):
        vgg_network.apply(vgg_network.params, jnp.zeros((1, 32, 32, 3), jnp.uint8))


def test_from_params_lists_every_problem(vgg_variables):
    flat = traverse_util.flatten_dict(vgg_variables)
    del flat[("params", "features", "conv1_1", "bias")]
    flat[("params", "features", "conv2_1", "kernel")] = np.zeros((3, 3, 64, 99), np.float32)
    flat[("params", "extra", "kernel")] = np.zeros(3, np.float32)
    broken = traverse_util.unflatten_dict(flat)

    with pytest.raises(ValueError) as error:
        RetrievalNetwork.from_params("vgg16", broken, IMAGENET_RGB)

    message = str(error.value)
    assert "params/features/conv1_1/bias" in message
    assert "params/features/conv2_1/kernel: expected (3, 3, 64, 128), got (3, 3, 64, 99)" in message
    assert "params/extra/kernel" in message


def test_checkpoint_round_trip(vgg_network, tmp_path):
    path = tmp_path / "vgg.msgpack"
    network = RetrievalNetwork.from_params(
        "vgg16",
        vgg_network.params,
        CAFFE_BGR,
        learned_whitening=vgg_network.learned_whitening,
        metadata={"format": "test", "file": "none"},
    )

    save_network(network, path)
    loaded = load_network(path)

    assert loaded.spec == network.spec
    assert loaded.metadata == {"format": "test", "file": "none"}
    assert loaded.checkpoint_sha256 == file_sha256(path)
    for (path_a, leaf_a), (path_b, leaf_b) in zip(
        jax.tree_util.tree_leaves_with_path(network.params), jax.tree_util.tree_leaves_with_path(loaded.params)
    ):
        assert path_a == path_b
        np.testing.assert_array_equal(np.asarray(leaf_a), np.asarray(leaf_b))
    assert loaded.learned_whitening.name == "toy-set"
    assert loaded.learned_whitening.multi_scale is None
    np.testing.assert_array_equal(
        loaded.learned_whitening.single_scale.projection, network.learned_whitening.single_scale.projection
    )


def test_load_rejects_foreign_files(tmp_path):
    text_file = tmp_path / "notes.txt"
    text_file.write_text("these are not weights\n")
    other_msgpack = tmp_path / "other.msgpack"
    other_msgpack.write_bytes(msgpack.packb({"something": 1}))
    random_bytes = tmp_path / "random.bin"
    random_bytes.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())

    for path in (text_file, other_msgpack, random_bytes):
        with pytest.raises(CheckpointError, match="is not a pire_jax network file"):
            load_network(path)
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.msgpack")


def test_load_rejects_other_version_and_damage(vgg_network, tmp_path):
    path = tmp_path / "vgg.msgpack"
    save_network(vgg_network, path)
    contents = serialization.msgpack_restore(path.read_bytes())

    newer = dict(contents, format_version=99)
    (tmp_path / "newer.msgpack").write_bytes(serialization.msgpack_serialize(newer))
    with pytest.raises(CheckpointError, match="format version 99"):
        load_network(tmp_path / "newer.msgpack")

    del contents["variables"]["params"]["features"]["conv5_3"]
    (tmp_path / "damaged.msgpack").write_bytes(serialization.msgpack_serialize(contents))
    with pytest.raises(CheckpointError, match="damaged.*conv5_3"):
        load_network(tmp_path / "damaged.msgpack")


def test_load_works_without_torch(vgg_network, tmp_path):
    path = tmp_path / "vgg.msgpack"
    save_network(vgg_network, path)
    script = (
        "import sys; sys.modules['torch'] = None\n"  # Any import of torch now raises ImportError.
        "from pire_jax.models import load_network\n"
        f"network = load_network({str(path)!r})\n"
        "print(network.arch, network.descriptor_dim, 'torch' in sys.modules and sys.modules['torch'] is not None)\n"
    )
    repository_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        cwd=repository_root,
        env=dict(os.environ, PYTHONPATH=repository_root, JAX_PLATFORMS="cpu"),
        timeout=300,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["vgg16", "64", "False"]
