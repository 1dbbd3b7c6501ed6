"""Descriptors of converted checkpoints against an independent PyTorch forward, and the neural system.

The tests write checkpoints with random weights under the real cirtorch and
torchvision key names and shapes. Each is converted with `weights_conversion`, saved
and loaded through our file format, and compared to 1e-4 max abs with
`torch_reference`, which reimplements cirtorch's extract_ss, extract_ms and whitenapply.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import torch_reference as ref
from pire_jax.descriptors import MULTI_SCALES, ExtractionConfig, compute_descriptors, extract_descriptors, group_by_shape
from pire_jax.descriptors.extraction import MAX_PENDING_BATCHES
from pire_jax.models import load_network, save_network
from pire_jax.retrieval import make_system
from weights_conversion import convert

TOLERANCE = 1e-4
IMAGE_SIZE = 128
LEARNED_WHITENING_SET = "retrieval-SfM-120k"


def _images():
    """Three 150x120 images (128x102 after resizing) and one 110x160 image (88x128)."""
    same_shape = list(ref.calibration_images(3, 150, 120, seed=100))
    other_shape = list(ref.calibration_images(1, 110, 160, seed=101))
    return same_shape + other_shape


IMAGES = _images()


def _convert_and_reload(tmp_path_factory, source_format, arch, source_path):
    network = convert(source_format, arch, str(source_path))
    path = tmp_path_factory.mktemp("converted") / f"{arch}.msgpack"
    save_network(network, path)
    return load_network(path), path


def _reference(net, images, scales, boxes=None, normalise=ref.normalise_imagenet):
    boxes = boxes or [None] * len(images)
    return np.stack(
        [ref.cirtorch_extract(net, image, box, IMAGE_SIZE, scales, normalise) for image, box in zip(images, boxes)]
    )


def _assert_informative(descriptors):
    """Fail when reference descriptors are degenerate, so a match with them would prove nothing."""
    assert np.all(np.isfinite(descriptors))
    np.testing.assert_allclose(np.linalg.norm(descriptors, axis=1), 1.0, atol=1e-4)
    assert np.mean(np.abs(descriptors) > 1e-3) > 0.5, "most dimensions are zero"
    similarity = descriptors @ descriptors.T
    off_diagonal = similarity[~np.eye(len(descriptors), dtype=bool)]
    assert off_diagonal.max() < 0.999, "different images have the same descriptor"
    assert np.abs(descriptors[0] - descriptors[1]).max() > 100 * TOLERANCE


def _assert_matches(descriptors, expected):
    assert descriptors.dtype == np.float32
    assert descriptors.shape == expected.shape
    np.testing.assert_allclose(descriptors, expected, atol=TOLERANCE, rtol=0)


@pytest.fixture(scope="module")
def cirtorch_resnet101(tmp_path_factory):
    net = ref.build_retrieval_net("resnet101", seed=0, p=2.7, whitening_dim=2048)
    learned_whitening = {
        LEARNED_WHITENING_SET: {
            "ss": ref.random_learned_whitening(2048, seed=1),
            "ms": ref.random_learned_whitening(2048, seed=2),
        }
    }
    path = tmp_path_factory.mktemp("cirtorch") / "retrievalSfM120k-resnet101-gem.pth"
    ref.save_cirtorch_checkpoint(path, "resnet101", net, learned_whitening)
    network, _ = _convert_and_reload(tmp_path_factory, "cirtorch", "resnet101", path)
    return net, network, learned_whitening[LEARNED_WHITENING_SET]


def test_cirtorch_resnet101_single_scale(cirtorch_resnet101):
    net, network, learned_whitening = cirtorch_resnet101
    config = ExtractionConfig(image_size=IMAGE_SIZE)

    expected = _reference(net, IMAGES, (1.0,))
    expected_whitened = ref.whitenapply(expected, learned_whitening["ss"]["m"], learned_whitening["ss"]["P"])
    descriptors = extract_descriptors(network, IMAGES, config=config)
    whitened = extract_descriptors(network, IMAGES, config=ExtractionConfig(image_size=IMAGE_SIZE, learned_whitening=True))

    assert network.gem_p == pytest.approx(2.7)
    assert network.spec.whitening_dim == 2048
    _assert_informative(expected)
    _assert_matches(descriptors, expected)
    _assert_informative(expected_whitened)
    _assert_matches(whitened, expected_whitened)


def test_cirtorch_resnet101_multi_scale(cirtorch_resnet101):
    net, network, learned_whitening = cirtorch_resnet101
    images = IMAGES[:2]

    expected = _reference(net, images, MULTI_SCALES)
    expected_whitened = ref.whitenapply(expected, learned_whitening["ms"]["m"], learned_whitening["ms"]["P"])
    descriptors = extract_descriptors(network, images, config=ExtractionConfig(image_size=IMAGE_SIZE, scales=MULTI_SCALES))
    whitened = extract_descriptors(
        network, images, config=ExtractionConfig(image_size=IMAGE_SIZE, scales=MULTI_SCALES, learned_whitening=True)
    )

    _assert_informative(expected)
    _assert_matches(descriptors, expected)
    _assert_matches(whitened, expected_whitened)


@pytest.fixture(scope="module")
def torchvision_resnet101(tmp_path_factory):
    classifier = ref.build_classifier("resnet101", seed=30)
    path = tmp_path_factory.mktemp("torchvision") / "resnet101-63fe2227.pth"
    torch.save(classifier.state_dict(), path)
    network, _ = _convert_and_reload(tmp_path_factory, "torchvision", "resnet101", path)
    net = ref.ImageRetrievalNet(ref.cirtorch_features(classifier), 2048, p=3.0).eval()
    return net, network


def test_torchvision_resnet101_single_scale(torchvision_resnet101):
    # Multi-scale combination without a whitening layer (with GeM's p) is covered by the VGG16 tests,
    # which compile much faster.
    net, network = torchvision_resnet101
    images = IMAGES[:2]

    expected = _reference(net, images, (1.0,))
    descriptors = extract_descriptors(network, images, config=ExtractionConfig(image_size=IMAGE_SIZE))

    assert network.gem_p == pytest.approx(3.0)
    _assert_informative(expected)
    _assert_matches(descriptors, expected)


@pytest.fixture(scope="module")
def cirtorch_vgg16(tmp_path_factory):
    net = ref.build_retrieval_net("vgg16", seed=40, p=3.3)
    learned_whitening = {"ss": ref.random_learned_whitening(512, seed=41), "ms": ref.random_learned_whitening(512, seed=42)}
    path = tmp_path_factory.mktemp("cirtorch") / "vgg16_gem.pth"
    ref.save_cirtorch_checkpoint(path, "vgg16", net, learned_whitening)
    network, network_path = _convert_and_reload(tmp_path_factory, "cirtorch", "vgg16", path)
    return net, network, learned_whitening, network_path


def test_cirtorch_vgg16_with_boxes(cirtorch_vgg16):
    net, network, learned_whitening, _ = cirtorch_vgg16
    queries = list(ref.calibration_images(2, 200, 170, seed=43))
    boxes = [[20.4, 10.6, 170.2, 130.5], [0, 0, 170, 200]]

    single_scale = _reference(net, queries, (1.0,), boxes)
    # Without a whitening layer the scales are combined with GeM's p, which changes the result.
    assert np.abs(_reference(net, queries, MULTI_SCALES, boxes) - single_scale).max() > 100 * TOLERANCE

    for scales, key in (((1.0,), "ss"), (MULTI_SCALES, "ms")):
        expected = _reference(net, queries, scales, boxes)
        expected_whitened = ref.whitenapply(expected, learned_whitening[key]["m"], learned_whitening[key]["P"])
        config = ExtractionConfig(image_size=IMAGE_SIZE, scales=scales)
        descriptors = extract_descriptors(network, queries, boxes, config)
        whitened = extract_descriptors(network, queries, boxes, ExtractionConfig(IMAGE_SIZE, scales, learned_whitening=True))

        _assert_informative(expected)
        _assert_matches(descriptors, expected)
        _assert_matches(whitened, expected_whitened)


def test_torchvision_vgg16_single_scale(tmp_path_factory):
    classifier = ref.build_classifier("vgg16", seed=50)
    path = tmp_path_factory.mktemp("torchvision") / "vgg16-397923af.pth"
    torch.save(classifier.state_dict(), path)
    network, _ = _convert_and_reload(tmp_path_factory, "torchvision", "vgg16", path)
    net = ref.ImageRetrievalNet(ref.cirtorch_features(classifier), 512, p=3.0).eval()

    expected = _reference(net, IMAGES, (1.0,))
    descriptors = extract_descriptors(network, IMAGES, config=ExtractionConfig(image_size=IMAGE_SIZE))

    _assert_informative(expected)
    _assert_matches(descriptors, expected)


def test_batching_keeps_order(cirtorch_vgg16):
    _, network, _, _ = cirtorch_vgg16
    images = [IMAGES[3], IMAGES[0], IMAGES[1], IMAGES[3], IMAGES[2]]

    batched = extract_descriptors(network, images, config=ExtractionConfig(image_size=IMAGE_SIZE, batch_size=2))
    one_by_one = np.concatenate(
        [extract_descriptors(network, [image], config=ExtractionConfig(image_size=IMAGE_SIZE)) for image in images]
    )

    np.testing.assert_allclose(batched, one_by_one, atol=1e-6)
    np.testing.assert_allclose(batched[0], batched[3], atol=1e-6)


def test_group_by_shape_batches():
    shapes = [(4, 5, 3)] * 7 + [(5, 4, 3)] * 2 + [(4, 5, 3)] * 2 + [(6, 6, 3)]
    prepared = [(index, np.zeros(shape, np.uint8)) for index, shape in enumerate(shapes)]

    batches = list(group_by_shape(prepared, batch_size=4))

    assert sorted(index for batch in batches for index, _ in batch) == list(range(len(shapes)))
    assert [len(batch) for batch in batches] == [4, 4, 2, 1, 1]
    for batch in batches:
        assert len({image.shape for _, image in batch}) == 1
    assert [index for index, _ in batches[0]] == [0, 1, 2, 3]
    assert [index for index, _ in batches[1]] == [4, 5, 6, 9]


def test_group_by_shape_bounds_memory():
    batch_size = 2
    shapes = [(8 + index, 8, 3) for index in range(40)]  # All distinct, so no batch ever fills.
    waiting = []

    def prepared():
        for index, shape in enumerate(shapes):
            waiting.append(index)
            yield index, np.zeros(shape, np.uint8)

    done = []
    for batch in group_by_shape(prepared(), batch_size):
        done.extend(index for index, _ in batch)
        assert len(waiting) - len(done) <= MAX_PENDING_BATCHES * batch_size

    assert sorted(done) == list(range(len(shapes)))


def test_extraction_input_errors(cirtorch_vgg16, torchvision_resnet101):
    _, vgg_network, _, _ = cirtorch_vgg16
    _, resnet_network = torchvision_resnet101

    with pytest.raises(ValueError, match="has none"):
        extract_descriptors(resnet_network, IMAGES[:1], config=ExtractionConfig(learned_whitening=True))
    with pytest.raises(ValueError, match="one box"):
        extract_descriptors(vgg_network, IMAGES[:2], boxes=[None])
    with pytest.raises(ValueError, match="uint8"):
        extract_descriptors(vgg_network, [IMAGES[0].astype(np.float32)])
    assert extract_descriptors(vgg_network, []).shape == (0, 512)


def test_multiscale_gradient_matches_torch(cirtorch_vgg16):
    # PIRE differentiates descriptors with respect to the network input.
    net, network, _, _ = cirtorch_vgg16
    scales = (1.0, 1 / np.sqrt(2))  # Two scales keep the compile short and still resize and use GeM's p.
    weights = np.random.default_rng(44).normal(size=512).astype(np.float32)
    network_input = np.asarray(network.input_convention.to_network_input(IMAGES[0][None, :40, :36]))

    def objective(x, params):
        return jnp.sum(compute_descriptors(network.spec, params, x, scales)[0] * weights)

    gradient = np.asarray(jax.jit(jax.grad(objective))(jnp.asarray(network_input), network.params))
    torch_input = torch.from_numpy(network_input.transpose(0, 3, 1, 2).copy()).requires_grad_(True)
    (ref.cirtorch_multiscale(net, torch_input, scales) * torch.from_numpy(weights)).sum().backward()
    expected = torch_input.grad.numpy().transpose(0, 2, 3, 1)

    assert np.abs(expected).max() > 0
    np.testing.assert_allclose(gradient, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_neural_system_ranks_and_hashes(cirtorch_vgg16, tmp_path, monkeypatch):
    _, network, _, network_path = cirtorch_vgg16
    monkeypatch.setenv("PIRE_JAX_CACHE_DIR", str(tmp_path / "jax_cache"))
    system = make_system("neural", weights=str(network_path), image_size=IMAGE_SIZE, multiscale=True, learned_whitening=True)

    database = system.describe_database(IMAGES)
    queries = [system.describe_query(IMAGES[2], None), system.describe_query(IMAGES[3], [0, 0, 160, 110])]
    ranks = system.rank(queries, database)
    settings = system.settings()

    assert ranks.shape == (4, 2)
    assert ranks[0, 0] == 2
    assert ranks[0, 1] == 3
    assert settings["weights_sha256"] == network.checkpoint_sha256
    assert settings["scales"] == list(MULTI_SCALES)
    assert settings["learned_whitening"] is True
    assert settings["image_size"] == IMAGE_SIZE
    assert (tmp_path / "jax_cache").is_dir()


def test_neural_system_rejects_missing_whitening(torchvision_resnet101, tmp_path):
    _, network = torchvision_resnet101
    path = tmp_path / "no_whitening.msgpack"
    save_network(network, path)

    with pytest.raises(ValueError, match="has no learned whitening"):
        make_system("neural", weights=str(path), learned_whitening=True)


def test_real_vgg16_same_landmark_closer(weights_dir, data_root, tmp_path):
    from conftest import require_file

    from pire_jax.images import load_image

    network = convert("keras-onnx", "vgg16", require_file(weights_dir, "vgg16_keras_imagenet_conv_base.onnx"))
    names = ["sacre_coeur_00", "sacre_coeur_01", "sceaux_castle_00", "sceaux_castle_01", "distractor_giraffe"]
    images = [load_image(require_file(data_root, "landmarks48", "jpg", f"{name}.jpg")) for name in names]

    descriptors = extract_descriptors(network, images, config=ExtractionConfig(image_size=224))
    similarity = descriptors @ descriptors.T

    for first, second in ((0, 1), (2, 3)):
        others = [index for index in range(len(names)) if index not in (first, second)]
        assert similarity[first, second] > similarity[first, others].max(), names[first]
        assert similarity[second, first] > similarity[second, others].max(), names[second]
