"""Conversion of cirtorch, torchvision and Keras ONNX weights: key mapping, numerics and errors."""

import datetime
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
import torch

import torch_reference as ref
from pire_jax.models import CAFFE_BGR, IMAGENET_RGB, load_network
from weights_conversion import ConversionError, convert

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _feature_map(network, images_uint8):
    network_input = network.input_convention.to_network_input(images_uint8)
    return np.asarray(jax.jit(network.feature_map)(network.params, network_input))


def _torch_feature_map(features, images_uint8):
    with torch.no_grad():
        return features(ref.normalise_imagenet(images_uint8)).permute(0, 2, 3, 1).numpy()


@pytest.fixture(scope="module")
def vgg16_classifier():
    return ref.build_classifier("vgg16", seed=10)


@pytest.fixture(scope="module")
def vgg16_cirtorch_net(vgg16_classifier):
    return ref.ImageRetrievalNet(ref.cirtorch_features(vgg16_classifier), 512, p=3.3).eval()


@pytest.fixture(scope="module")
def vgg16_cirtorch_file(tmp_path_factory, vgg16_cirtorch_net):
    path = tmp_path_factory.mktemp("cirtorch") / "vgg16_gem.pth"
    ref.save_cirtorch_checkpoint(path, "vgg16", vgg16_cirtorch_net)
    return str(path)


@pytest.fixture(scope="module")
def resnet101_classifier():
    return ref.build_classifier("resnet101", seed=20)


@pytest.fixture(scope="module")
def resnet101_torchvision_file(tmp_path_factory, resnet101_classifier):
    path = tmp_path_factory.mktemp("torchvision") / "resnet101.pth"
    torch.save(resnet101_classifier.state_dict(), path)
    return str(path)


def test_torchvision_resnet101_feature_map(resnet101_classifier, resnet101_torchvision_file):
    # Odd sizes exercise PyTorch's explicit padding in conv1, the max-pool and the strided 3x3 convolutions.
    images = ref.calibration_images(2, 97, 75, seed=21)

    network = convert("torchvision", "resnet101", resnet101_torchvision_file)
    expected = _torch_feature_map(ref.cirtorch_features(resnet101_classifier), images)
    feature_map = _feature_map(network, images)

    assert network.gem_p == pytest.approx(3.0)
    assert network.input_convention == IMAGENET_RGB
    assert network.metadata["format"] == "torchvision"
    assert feature_map.shape == expected.shape == (2, 4, 3, 2048)
    assert np.abs(expected).max() > 0.1
    np.testing.assert_allclose(feature_map, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_cirtorch_vgg16_feature_map(vgg16_cirtorch_net, vgg16_cirtorch_file):
    images = ref.calibration_images(1, 97, 75, seed=11)

    network = convert("cirtorch", "vgg16", vgg16_cirtorch_file)
    expected = _torch_feature_map(vgg16_cirtorch_net.features, images)
    feature_map = _feature_map(network, images)

    assert network.gem_p == pytest.approx(3.3)
    assert network.spec.whitening_dim is None
    assert network.learned_whitening is None
    assert network.metadata["cirtorch_meta"]["architecture"] == "vgg16"
    assert feature_map.shape == expected.shape == (1, 6, 4, 512)
    np.testing.assert_allclose(feature_map, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_legacy_torch_format_converts(vgg16_cirtorch_net, tmp_path):
    path = tmp_path / "legacy.pth"
    ref.save_cirtorch_checkpoint(path, "vgg16", vgg16_cirtorch_net, legacy_format=True)

    network = convert("cirtorch", "vgg16", str(path))

    np.testing.assert_array_equal(
        np.asarray(network.params["params"]["features"]["conv1_1"]["kernel"]),
        vgg16_cirtorch_net.features[0].weight.detach().numpy().transpose(2, 3, 1, 0),
    )


def _save_modified_cirtorch(path, net, edit_state_dict=None, edit_meta=None):
    state_dict = dict(net.state_dict())
    meta = ref.cirtorch_meta("vgg16", net)
    if edit_state_dict:
        edit_state_dict(state_dict)
    if edit_meta:
        edit_meta(meta)
    torch.save({"meta": meta, "state_dict": state_dict}, path)
    return str(path)


def test_key_errors_listed_together(vgg16_cirtorch_net, tmp_path):
    def edit(state_dict):
        del state_dict["features.0.bias"]
        del state_dict["features.28.weight"]
        state_dict["features.30.weight"] = torch.zeros(3)
        state_dict["features.2.weight"] = torch.zeros(64, 64, 5, 5)

    path = _save_modified_cirtorch(tmp_path / "broken.pth", vgg16_cirtorch_net, edit_state_dict=edit)

    with pytest.raises(ConversionError) as error:
        convert("cirtorch", "vgg16", path)

    message = str(error.value)
    assert "2 missing keys ['features.0.bias', 'features.28.weight']" in message
    assert "1 unexpected keys ['features.30.weight']" in message
    assert "features.2.weight: expected (64, 64, 3, 3), got (64, 64, 5, 5)" in message
    assert path in message


def test_wrong_arch_lists_keys(resnet101_torchvision_file):
    with pytest.raises(ConversionError) as error:
        convert("torchvision", "vgg16", resnet101_torchvision_file)

    message = str(error.value)
    assert "26 missing keys" in message
    assert "'features.0.weight'" in message
    assert "'layer4.2.bn3.running_var'" in message
    assert "num_batches_tracked" not in message
    assert "'fc.weight'" not in message


def test_cirtorch_meta_arch_mismatch(vgg16_cirtorch_file):
    with pytest.raises(ConversionError, match="contains a 'vgg16' network, but --arch is 'resnet101'"):
        convert("cirtorch", "resnet101", vgg16_cirtorch_file)


def test_cirtorch_rejects_unsupported_pooling(vgg16_cirtorch_net, tmp_path):
    path = _save_modified_cirtorch(
        tmp_path / "mac.pth", vgg16_cirtorch_net, edit_meta=lambda meta: meta.update(pooling="mac")
    )

    with pytest.raises(ConversionError, match="'mac' pooling"):
        convert("cirtorch", "vgg16", path)


def test_text_file_rejected(tmp_path):
    path = tmp_path / "weights.pth"
    path.write_text("this is a text file, not weights\n")

    for source_format in ("cirtorch", "torchvision"):
        with pytest.raises(ConversionError, match="is not a PyTorch checkpoint") as error:
            convert(source_format, "vgg16", str(path))
        assert str(path) in str(error.value)
    with pytest.raises(ConversionError, match="not a readable ONNX model"):
        convert("keras-onnx", "vgg16", str(path))


def test_truncated_file_rejected(vgg16_cirtorch_file, tmp_path):
    data = open(vgg16_cirtorch_file, "rb").read()
    path = tmp_path / "truncated.pth"
    path.write_bytes(data[: len(data) // 3])

    with pytest.raises(ConversionError, match="truncated or corrupt") as error:
        convert("cirtorch", "vgg16", str(path))

    assert "Expected a cirtorch checkpoint" in str(error.value)


def test_empty_and_missing_files_rejected(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")

    with pytest.raises(ConversionError, match="is not a PyTorch checkpoint"):
        convert("cirtorch", "vgg16", str(empty))
    with pytest.raises(ConversionError, match="not found"):
        convert("torchvision", "vgg16", str(tmp_path / "missing.pth"))


def test_onnx_file_as_cirtorch_rejected(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [], [])
    path = tmp_path / "model.onnx"
    onnx.save(helper.make_model(graph), path)

    with pytest.raises(ConversionError, match="is not a PyTorch checkpoint.*expected a cirtorch checkpoint"):
        convert("cirtorch", "vgg16", str(path))


def test_unsafe_pickle_rejected(vgg16_cirtorch_net, tmp_path):
    path = _save_modified_cirtorch(
        tmp_path / "unsafe.pth",
        vgg16_cirtorch_net,
        edit_meta=lambda meta: meta.update(date=datetime.date(2019, 6, 10)),
    )

    with pytest.raises(ConversionError, match="cannot be read safely with torch.load\\(weights_only=True\\)"):
        convert("cirtorch", "vgg16", path)


def test_formats_swapped_rejected(vgg16_cirtorch_file, resnet101_torchvision_file):
    with pytest.raises(ConversionError, match="use --format cirtorch"):
        convert("torchvision", "vgg16", vgg16_cirtorch_file)
    with pytest.raises(ConversionError, match="has no 'state_dict'.*--format torchvision"):
        convert("cirtorch", "resnet101", resnet101_torchvision_file)


def _save_with_learned_whitening(path, net, learned_whitening):
    torch.save({"meta": ref.cirtorch_meta("vgg16", net, learned_whitening), "state_dict": net.state_dict()}, path)
    return str(path)


def test_learned_whitening_layouts(vgg16_cirtorch_net, tmp_path):
    single = ref.random_learned_whitening(512, seed=1)
    multi = {"m": torch.from_numpy(single["m"]), "P": torch.from_numpy(single["P"][:256])}  # tensors, 256-d output
    flat = _save_with_learned_whitening(tmp_path / "flat.pth", vgg16_cirtorch_net, {"ss": single, "ms": multi})
    nested = _save_with_learned_whitening(
        tmp_path / "nested.pth", vgg16_cirtorch_net, {"retrieval-SfM-120k": {"ss": single}}
    )

    flat_whitening = convert("cirtorch", "vgg16", flat).learned_whitening
    nested_whitening = convert("cirtorch", "vgg16", nested).learned_whitening

    assert flat_whitening.name == ""
    assert flat_whitening.multi_scale.projection.shape == (256, 512)
    np.testing.assert_allclose(flat_whitening.single_scale.mean, single["m"][:, 0], rtol=1e-6)
    assert nested_whitening.name == "retrieval-SfM-120k"
    assert nested_whitening.multi_scale is None
    np.testing.assert_allclose(nested_whitening.single_scale.projection, single["P"], rtol=1e-6)


def test_learned_whitening_set_choice(vgg16_cirtorch_net, tmp_path):
    whitening = {"set-a": {"ss": ref.random_learned_whitening(512, 2)}, "set-b": {"ss": ref.random_learned_whitening(512, 3)}}
    path = _save_with_learned_whitening(tmp_path / "two_sets.pth", vgg16_cirtorch_net, whitening)

    with pytest.raises(ConversionError, match=r"several sets \['set-a', 'set-b'\].*--learned_whitening_set"):
        convert("cirtorch", "vgg16", path)
    chosen = convert("cirtorch", "vgg16", path, learned_whitening_set="set-b").learned_whitening
    with pytest.raises(ConversionError, match="no learned whitening 'set-c'"):
        convert("cirtorch", "vgg16", path, learned_whitening_set="set-c")

    assert chosen.name == "set-b"
    np.testing.assert_allclose(chosen.single_scale.projection, whitening["set-b"]["ss"]["P"], rtol=1e-6)


def test_learned_whitening_wrong_dim(vgg16_cirtorch_net, tmp_path):
    path = _save_with_learned_whitening(
        tmp_path / "wrong.pth", vgg16_cirtorch_net, {"ss": ref.random_learned_whitening(2048, 4)}
    )

    with pytest.raises(ConversionError, match="512 dimensions"):
        convert("cirtorch", "vgg16", path)


def test_keras_onnx_requires_vgg16(tmp_path):
    with pytest.raises(ConversionError, match="Invalid --arch 'resnet101' for the keras-onnx format"):
        convert("keras-onnx", "resnet101", str(tmp_path / "any.onnx"))


def _run_cli(*arguments):
    environment = dict(os.environ, PYTHONPATH=REPOSITORY_ROOT, JAX_PLATFORMS="cpu")
    return subprocess.run(
        [sys.executable, "-m", "weights_conversion", *arguments],
        capture_output=True,
        text=True,
        cwd=REPOSITORY_ROOT,
        env=environment,
        timeout=300,
        check=False,
    )


def test_cli_writes_loadable_file(vgg16_cirtorch_file, tmp_path):
    output = tmp_path / "out" / "vgg16.msgpack"

    result = _run_cli("--format", "cirtorch", "--arch", "vgg16", "--input", vgg16_cirtorch_file, "--output", str(output))
    network = load_network(output)

    assert result.returncode == 0, result.stderr
    assert network.arch == "vgg16"
    assert network.gem_p == pytest.approx(3.3)
    assert network.metadata["sha256"] == __import__("hashlib").sha256(open(vgg16_cirtorch_file, "rb").read()).hexdigest()


def test_cli_error_without_traceback(tmp_path):
    path = tmp_path / "notes.pth"
    path.write_text("hello\n")

    result = _run_cli("--format", "cirtorch", "--arch", "vgg16", "--input", str(path), "--output", str(tmp_path / "x"))

    assert result.returncode == 1
    assert "Conversion failed" in result.stderr
    assert "is not a PyTorch checkpoint" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "x").exists()


def test_caffe_convention_for_keras(weights_dir):
    from conftest import require_file

    network = convert("keras-onnx", "vgg16", require_file(weights_dir, "vgg16_keras_imagenet_conv_base.onnx"))

    assert network.input_convention == CAFFE_BGR
    assert network.gem_p == pytest.approx(3.0)
    assert network.metadata["sha256"].startswith("3be917fb")
