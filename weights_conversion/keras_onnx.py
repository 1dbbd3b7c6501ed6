"""Converter for a Keras VGG16 exported to ONNX (tf2onnx) into a VGG16-GeM network.

The 13 convolutions of the Keras VGG16 conv base are ONNX initializers named after
their Keras layers, e.g. `functional_1/block1_conv1_1/convolution/ReadVariableOp:0`
(kernel, OIHW) and `functional_1/block1_conv1_1/Squeeze:0` (bias). Initializers are
matched by the `block{b}_conv{c}` part of the name and by rank (4: kernel, 1: bias),
so other export prefixes work too. Everything else (a dense head, batch-norm
constants, shape constants) is ignored. Each convolution must be a 3x3 Conv with
stride 1 and padding 1, which is checked on the graph.

Keras VGG16 expects Caffe-style input: BGR, 0..255, minus the Caffe ImageNet mean, no
std (`CAFFE_BGR`). GeM's p is 3, the initial value of Radenović et al. (TPAMI 2018).
"""

import os
import re

import numpy as np

from pire_jax.models import CAFFE_BGR, DEFAULT_GEM_P, RetrievalNetwork, file_sha256
from pire_jax.models.retrieval_network import NetworkSpec
from weights_conversion import key_mapping
from weights_conversion.key_mapping import ConversionError

EXPECTED = "an ONNX export of the Keras VGG16 conv base (initializers named block{b}_conv{c})"

_KERAS_CONV_NAME = re.compile(r"block(\d+)_conv(\d+)")

GEM_P_PATH = ("params", "pool", "p")


def keras_source_key(flax_path: key_mapping.FlaxPath) -> str | None:
    """Return the canonical source key ("block1_conv1/kernel") of a Flax variable, None for GeM's p."""
    _, top, *rest = flax_path
    if top == "pool":
        return None
    conv_name, leaf = rest  # e.g. "conv1_1", "kernel"
    block, index = conv_name[len("conv") :].split("_")
    return f"block{block}_conv{index}/{leaf}"


def _read_onnx(input_path: str):
    """Load an ONNX model, with errors that name the file and the expected content."""
    import onnx  # pylint: disable=import-outside-toplevel
    from google.protobuf import message  # pylint: disable=import-outside-toplevel

    if not os.path.isfile(input_path):
        raise ConversionError(f"Input file not found: {input_path}.")
    try:
        model = onnx.load(input_path, load_external_data=False)
    except (message.DecodeError, ValueError, OSError) as error:
        raise ConversionError(f"{input_path} is not a readable ONNX model ({error}); expected {EXPECTED}.") from error
    if not model.graph.initializer:
        raise ConversionError(f"{input_path} has no ONNX initializers (weights); expected {EXPECTED}.")
    return model


def _check_convolutions(model, kernel_names: dict[str, str], input_path: str) -> None:
    """Raise ConversionError unless every kernel feeds a 3x3 Conv with stride 1, padding 1 and no dilation."""
    import onnx  # pylint: disable=import-outside-toplevel

    expected_attributes = {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1]}
    conv_nodes = {node.input[1]: node for node in model.graph.node if node.op_type == "Conv" and len(node.input) > 1}
    problems = []
    for key, initializer_name in sorted(kernel_names.items()):
        node = conv_nodes.get(initializer_name)
        if node is None:
            problems.append(f"{key}: no Conv node uses {initializer_name}")
            continue
        attributes = {attribute.name: onnx.helper.get_attribute_value(attribute) for attribute in node.attribute}
        attributes.setdefault("strides", [1, 1])
        attributes.setdefault("dilations", [1, 1])
        attributes.setdefault("pads", [0, 0, 0, 0])
        for name, value in expected_attributes.items():
            if list(attributes.get(name, [])) != value:
                problems.append(f"{key}: {name} is {list(attributes.get(name, []))}, expected {value}")
    if problems:
        raise ConversionError(f"{input_path} does not contain VGG16's convolutions: {problems}.")


def convert_keras_onnx(input_path: str, arch: str) -> RetrievalNetwork:
    """Convert the ONNX export of a Keras VGG16 to a VGG16-GeM `RetrievalNetwork` with Caffe BGR input.

    Raises:
      ConversionError: `arch` is not vgg16, the file is not ONNX, or its convolutions
        do not fit VGG16 (all listed).
    """
    if arch != "vgg16":
        raise ConversionError(f"Invalid --arch {arch!r} for the keras-onnx format, which contains a VGG16 conv base; use --arch vgg16.")
    import onnx.numpy_helper  # pylint: disable=import-outside-toplevel

    model = _read_onnx(input_path)

    weights: dict[str, np.ndarray] = {}
    kernel_names: dict[str, str] = {}
    duplicates = []
    for initializer in model.graph.initializer:
        match = _KERAS_CONV_NAME.search(initializer.name)
        if match is None:
            continue
        rank = len(initializer.dims)
        leaf = {4: "kernel", 1: "bias"}.get(rank, f"rank{rank}:{initializer.name}")
        key = f"block{match.group(1)}_conv{match.group(2)}/{leaf}"
        if key in weights:
            duplicates.append(key)
        weights[key] = onnx.numpy_helper.to_array(initializer)
        if leaf == "kernel":
            kernel_names[key] = initializer.name
    if duplicates:
        raise ConversionError(f"{input_path} has several initializers for {sorted(duplicates)}; expected one each.")

    spec = NetworkSpec(arch=arch, input_convention=CAFFE_BGR, whitening_dim=None)
    variables = key_mapping.map_weights(
        spec,
        weights,
        source_key_for=keras_source_key,
        is_ignored=lambda key: False,
        source=f"Keras ONNX model {input_path}",
        defaults={GEM_P_PATH: np.asarray([DEFAULT_GEM_P], np.float32)},
    )
    _check_convolutions(model, kernel_names, input_path)

    metadata = {"format": "keras-onnx", "file": os.path.basename(input_path), "sha256": file_sha256(input_path)}
    return RetrievalNetwork.from_params(arch, variables, CAFFE_BGR, metadata=metadata)
