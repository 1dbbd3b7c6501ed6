"""Shared mapping from source parameter names to Flax variables, with validation that lists every problem.

Each converter maps every variable of our Flax network to the source key that
contains it (`source_key_for`). `map_weights` then checks the source weights against
that table in one pass and raises a single `ConversionError` listing all missing,
unexpected and mis-shaped keys, so a wrong file or a wrong --arch is diagnosed at once.

Layouts: PyTorch and ONNX convolution kernels are OIHW and Flax's are HWIO; linear
weights are (out, in) and Flax Dense kernels (in, out). Everything else keeps its shape.
"""

import re
from typing import Callable, Mapping

import numpy as np
from flax import traverse_util

from pire_jax.models.retrieval_network import NetworkSpec, expected_param_shapes

FlaxPath = tuple[str, ...]


class ConversionError(ValueError):
    """Source weights that cannot be converted: unreadable file, wrong format, or keys that do not fit."""


def source_shape(flax_path: FlaxPath, flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """Return the PyTorch/ONNX shape of a variable whose Flax shape is `flax_shape`."""
    if flax_path[-1] == "kernel" and len(flax_shape) == 4:
        height, width, in_channels, out_channels = flax_shape
        return (out_channels, in_channels, height, width)
    if flax_path[-1] == "kernel" and len(flax_shape) == 2:
        in_features, out_features = flax_shape
        return (out_features, in_features)
    return flax_shape


def to_flax_layout(flax_path: FlaxPath, array: np.ndarray) -> np.ndarray:
    """Reorder a PyTorch/ONNX array into the Flax layout of `flax_path`, as float32."""
    array = np.asarray(array, dtype=np.float32)
    if flax_path[-1] == "kernel" and array.ndim == 4:
        return np.ascontiguousarray(array.transpose(2, 3, 1, 0))  # OIHW -> HWIO
    if flax_path[-1] == "kernel" and array.ndim == 2:
        return np.ascontiguousarray(array.T)  # (out, in) -> (in, out)
    return array


def batch_norm_source_key(flax_path: FlaxPath, module_key: str) -> str:
    """Return the PyTorch BatchNorm key of a Flax BatchNorm variable (scale, bias, mean, var)."""
    leaf_names = {
        ("params", "scale"): "weight",
        ("params", "bias"): "bias",
        ("batch_stats", "mean"): "running_mean",
        ("batch_stats", "var"): "running_var",
    }
    return f"{module_key}.{leaf_names[(flax_path[0], flax_path[-1])]}"


def resnet_source_key(flax_path: FlaxPath, stem_keys: Mapping[str, str]) -> str:
    """Return the PyTorch key of a ResNet backbone variable.

    Args:
      flax_path: path below "features", starting with the collection, e.g.
        ("params", "layer1_0", "conv1", "kernel").
      stem_keys: PyTorch module names of conv1, bn1 and layer1..layer4, e.g.
        {"conv1": "features.0", "bn1": "features.1", "layer1": "features.4", ...} for cirtorch.
    """
    collection, *modules, leaf = flax_path
    top = modules[0]
    if top in ("conv1", "bn1"):
        module_key = stem_keys[top]
    else:
        match = re.fullmatch(r"(layer\d)_(\d+)", top)
        if match is None or len(modules) != 2:
            raise ValueError(f"Unexpected ResNet variable path {flax_path}.")
        stage, block = match.groups()
        local = {"downsample_conv": "downsample.0", "downsample_bn": "downsample.1"}.get(modules[1], modules[1])
        module_key = f"{stem_keys[stage]}.{block}.{local}"

    # Flax names convolutions conv1..conv3 and downsample_conv; the others are BatchNorm.
    if "conv" in modules[-1]:
        return f"{module_key}.weight"
    return batch_norm_source_key((collection, leaf), module_key)


# Index of each VGG16 convolution in torchvision's `vgg16().features` (conv, ReLU and
# max-pool modules numbered in order); cirtorch keeps the same indices.
VGG16_TORCH_CONV_INDICES = {
    "conv1_1": 0, "conv1_2": 2,
    "conv2_1": 5, "conv2_2": 7,
    "conv3_1": 10, "conv3_2": 12, "conv3_3": 14,
    "conv4_1": 17, "conv4_2": 19, "conv4_3": 21,
    "conv5_1": 24, "conv5_2": 26, "conv5_3": 28,
}  # fmt: skip


def vgg16_torch_source_key(flax_path: FlaxPath, prefix: str = "features") -> str:
    """Return the PyTorch key of a VGG16 convolution variable, e.g. ("params", "conv1_1", "kernel") -> "features.0.weight"."""
    _, conv_name, leaf = flax_path
    index = VGG16_TORCH_CONV_INDICES[conv_name]
    return f"{prefix}.{index}.{'weight' if leaf == 'kernel' else 'bias'}"


def map_weights(
    spec: NetworkSpec,
    source_weights: Mapping[str, np.ndarray],
    source_key_for: Callable[[FlaxPath], str | None],
    is_ignored: Callable[[str], bool],
    source: str,
    defaults: Mapping[FlaxPath, np.ndarray] | None = None,
) -> dict:
    """Build Flax variables for `spec` from source weights, validating every key and shape.

    Args:
      spec: the network to build.
      source_weights: source key -> array (PyTorch or ONNX layout).
      source_key_for: maps a Flax variable path to its source key, or None when the
        variable does not come from the source (it must then be in `defaults`).
      is_ignored: returns whether an unmapped source key is expected and skipped
        (classifier heads, `num_batches_tracked`).
      source: description of the source for error messages (file and format).
      defaults: values for variables the source does not provide, e.g. GeM p for
        torchvision weights.

    Returns:
      Nested Flax variables {"params": ..., "batch_stats": ...} of float32 NumPy arrays.

    Raises:
      ConversionError: listing all missing, unexpected and mis-shaped source keys.
    """
    defaults = dict(defaults or {})
    expected = expected_param_shapes(spec)

    flat: dict[FlaxPath, np.ndarray] = {}
    used_keys: set[str] = set()
    missing: list[str] = []
    misshaped: list[str] = []
    for flax_path, flax_shape in expected.items():
        key = source_key_for(flax_path)
        if key is None:
            flat[flax_path] = np.asarray(defaults[flax_path], np.float32).reshape(flax_shape)
            continue
        if key not in source_weights:
            missing.append(key)
            continue
        used_keys.add(key)
        value = np.asarray(source_weights[key])
        expected_shape = source_shape(flax_path, flax_shape)
        if tuple(value.shape) != expected_shape:
            misshaped.append(f"{key}: expected {expected_shape}, got {tuple(value.shape)}")
            continue
        flat[flax_path] = to_flax_layout(flax_path, value)

    unexpected = sorted(key for key in source_weights if key not in used_keys and not is_ignored(key))
    if missing or unexpected or misshaped:
        raise ConversionError(
            f"{source} does not match a {spec.arch} GeM network"
            f"{f' with a {spec.whitening_dim}-d whitening layer' if spec.whitening_dim else ''}:"
            f" {len(missing)} missing keys {sorted(missing)};"
            f" {len(unexpected)} unexpected keys {unexpected};"
            f" {len(misshaped)} keys with the wrong shape {sorted(misshaped)}."
            " Check --arch and --format."
        )
    return traverse_util.unflatten_dict(flat)
