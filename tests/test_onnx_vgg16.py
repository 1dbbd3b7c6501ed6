"""The converted Keras VGG16 (real ONNX weights) against onnxruntime on a real photo."""

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import require_file
from pire_jax.images import load_image
from weights_conversion import convert

ONNX_FILE = "vgg16_keras_imagenet_conv_base.onnx"
ONNX_INPUT_SIZE = 240  # The export fixes the input at (N, 240, 240, 3).
LAST_RELU = "functional_1/block5_conv3_1/Relu:0"  # conv5_3 + ReLU, before the final max-pool.


def test_vgg16_feature_map_matches_onnxruntime(weights_dir, data_root, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    onnx_path = require_file(weights_dir, ONNX_FILE)
    photo = load_image(require_file(data_root, "landmarks48", "jpg", "sacre_coeur_00.jpg"))
    resized = np.asarray(Image.fromarray(photo).resize((ONNX_INPUT_SIZE, ONNX_INPUT_SIZE), Image.Resampling.BILINEAR))

    conv_base_path = str(tmp_path / "conv_base.onnx")
    onnx.utils.extract_model(onnx_path, conv_base_path, ["input"], [LAST_RELU])
    session = onnxruntime.InferenceSession(conv_base_path, providers=["CPUExecutionProvider"])
    network = convert("keras-onnx", "vgg16", onnx_path)
    network_input = np.asarray(network.input_convention.to_network_input(resized[None]))
    expected = session.run(None, {"input": network_input})[0].transpose(0, 2, 3, 1)  # NCHW -> NHWC
    feature_map = np.asarray(jax.jit(network.feature_map)(network.params, network_input))

    assert feature_map.shape == expected.shape == (1, 15, 15, 512)
    assert np.mean(expected > 0) > 0.01
    np.testing.assert_allclose(feature_map, expected, atol=1e-4 * np.abs(expected).max(), rtol=0)


def test_vgg16_descriptor_matches_onnxruntime_gem(weights_dir, data_root, tmp_path):
    onnx = pytest.importorskip("onnx")
    onnxruntime = pytest.importorskip("onnxruntime")
    onnx_path = require_file(weights_dir, ONNX_FILE)
    photo = load_image(require_file(data_root, "landmarks48", "jpg", "sceaux_castle_00.jpg"))
    resized = np.asarray(Image.fromarray(photo).resize((ONNX_INPUT_SIZE, ONNX_INPUT_SIZE), Image.Resampling.BILINEAR))

    conv_base_path = str(tmp_path / "conv_base.onnx")
    onnx.utils.extract_model(onnx_path, conv_base_path, ["input"], [LAST_RELU])
    session = onnxruntime.InferenceSession(conv_base_path, providers=["CPUExecutionProvider"])
    network = convert("keras-onnx", "vgg16", onnx_path)
    network_input = np.asarray(network.input_convention.to_network_input(resized[None]))
    activations = session.run(None, {"input": network_input})[0].astype(np.float64)
    pooled = np.mean(np.maximum(activations, 1e-6) ** 3, axis=(2, 3)) ** (1 / 3)
    expected = pooled / np.linalg.norm(pooled, axis=1, keepdims=True)
    descriptor = np.asarray(jax.jit(network.apply)(network.params, network_input))

    assert descriptor.shape == (1, 512)
    np.testing.assert_allclose(descriptor, expected, atol=1e-5, rtol=0)
