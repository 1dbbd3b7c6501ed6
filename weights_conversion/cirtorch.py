"""Converter for cirtorch checkpoints (`retrievalSfM120k-resnet101-gem` and similar GeM networks).

A cirtorch checkpoint is a dict with `state_dict` and `meta`:
  * `state_dict`: the backbone under `features.N...` (ResNet: 0 conv1, 1 bn1, 2 relu,
    3 maxpool, 4..7 layer1..layer4; VGG16: torchvision's `features` indices), GeM's
    `pool.p` of shape (1,), and for networks with a whitening layer `whiten.weight`
    (D_out, D) and `whiten.bias` (D_out,);
  * `meta`: `architecture`, `pooling`, `whitening`, `mean`, `std`, ... and, for
    networks released with a learned whitening, `Lw` as either
    `{"ss": {"m", "P"}, "ms": {...}}` or nested under the whitening set name,
    `{"retrieval-SfM-120k": {"ss": ..., "ms": ...}}`.
"""

import os
from typing import Any

import numpy as np
from absl import logging

from pire_jax.models import IMAGENET_RGB, InputConvention, LearnedWhitening, RetrievalNetwork, WhiteningTransform
from pire_jax.models import file_sha256, get_architecture
from pire_jax.models.retrieval_network import NetworkSpec
from weights_conversion import key_mapping
from weights_conversion.key_mapping import ConversionError
from weights_conversion.torch_files import load_torch_file, to_numpy

EXPECTED = "a cirtorch checkpoint (a dict with 'state_dict' and 'meta', as saved by cirtorch's training script)"

# cirtorch ResNet backbones are nn.Sequential(conv1, bn1, relu, maxpool, layer1..layer4).
CIRTORCH_RESNET_KEYS = {
    "conv1": "features.0",
    "bn1": "features.1",
    "layer1": "features.4",
    "layer2": "features.5",
    "layer3": "features.6",
    "layer4": "features.7",
}

# JSON-serialisable fields of cirtorch's `meta` that are kept in the converted file.
KEPT_META_FIELDS = ("architecture", "local_whitening", "pooling", "regional", "whitening", "mean", "std", "outputdim")


def cirtorch_source_key(arch: str, flax_path: key_mapping.FlaxPath) -> str:
    """Return the cirtorch `state_dict` key of a Flax variable of a GeM network."""
    collection, top, *rest = flax_path
    if top == "pool":
        return "pool.p"
    if top == "whiten":
        return f"whiten.{'weight' if rest[-1] == 'kernel' else 'bias'}"
    if arch.startswith("resnet"):
        return key_mapping.resnet_source_key((collection, *rest), CIRTORCH_RESNET_KEYS)
    return key_mapping.vgg16_torch_source_key((collection, *rest), prefix="features")


def _is_ignored(key: str) -> bool:
    return key.endswith(".num_batches_tracked")


def _check_meta(meta: dict[str, Any], arch: str, has_whitening_layer: bool, path: str) -> None:
    """Raise ConversionError when `meta` describes a network this converter would get wrong."""
    architecture = meta.get("architecture")
    if architecture is not None and architecture != arch:
        raise ConversionError(f"{path} contains a {architecture!r} network, but --arch is {arch!r}; pass --arch {architecture}.")
    pooling = meta.get("pooling")
    if pooling is not None and pooling != "gem":
        raise ConversionError(f"{path} uses {pooling!r} pooling; only GeM networks ('gem') are supported.")
    for unsupported in ("regional", "local_whitening"):
        if meta.get(unsupported):
            raise ConversionError(f"{path} has meta[{unsupported!r}] = True, which pire_jax does not implement.")
    whitening = meta.get("whitening")
    if whitening is not None and bool(whitening) != has_whitening_layer:
        raise ConversionError(
            f"{path} is inconsistent: meta['whitening'] is {whitening} but the state dict "
            f"{'has' if has_whitening_layer else 'has no'} whiten.weight."
        )


def _input_convention(meta: dict[str, Any]) -> InputConvention:
    """Return ImageNet RGB normalisation, or the mean and std of `meta` when they differ from it."""
    if "mean" not in meta and "std" not in meta:
        return IMAGENET_RGB
    mean = tuple(float(value) for value in meta.get("mean", IMAGENET_RGB.mean))
    std = tuple(float(value) for value in meta.get("std", IMAGENET_RGB.std))
    if np.allclose(mean, IMAGENET_RGB.mean, rtol=0, atol=1e-9) and np.allclose(std, IMAGENET_RGB.std, rtol=0, atol=1e-9):
        return IMAGENET_RGB
    logging.warning("Checkpoint normalises with mean %s and std %s instead of ImageNet's.", mean, std)
    return InputConvention(name="rgb_checkpoint_mean_std", channel_order=(0, 1, 2), pixel_divisor=255.0, mean=mean, std=std)


def _whitening_transform(part: Any, where: str, descriptor_dim: int) -> WhiteningTransform:
    if not isinstance(part, dict) or "m" not in part or "P" not in part:
        raise ConversionError(f"Invalid learned whitening {where}: expected a dict with 'm' and 'P'.")
    mean = to_numpy(part["m"], f"{where}['m']").astype(np.float32)
    projection = to_numpy(part["P"], f"{where}['P']").astype(np.float32)
    if mean.size != descriptor_dim or projection.ndim != 2 or projection.shape[1] != descriptor_dim:
        raise ConversionError(
            f"Invalid learned whitening {where}: m has shape {mean.shape} and P {projection.shape}, but the "
            f"network's descriptors have {descriptor_dim} dimensions; expected m ({descriptor_dim}, 1) and "
            f"P (D_out, {descriptor_dim})."
        )
    return WhiteningTransform(mean=mean.reshape(-1), projection=projection)


def parse_learned_whitening(lw: Any, descriptor_dim: int, whitening_set: str | None, path: str) -> LearnedWhitening:
    """Read cirtorch's `meta['Lw']` in its flat or per-whitening-set layout.

    Args:
      lw: the `meta['Lw']` value.
      descriptor_dim: dimension of the network's descriptors, which P must accept.
      whitening_set: name of the set to keep when `lw` is nested by set name; may be
        None when there is exactly one.
      path: checkpoint file, for error messages.
    """
    if not isinstance(lw, dict) or not lw:
        raise ConversionError(f"Invalid meta['Lw'] in {path}: expected a non-empty dict.")

    if "ss" in lw or "ms" in lw:
        name, parts = "", lw
    else:
        names = sorted(lw)
        if whitening_set is None:
            if len(names) > 1:
                raise ConversionError(
                    f"{path} has learned whitenings for several sets {names}; choose one with --learned_whitening_set."
                )
            whitening_set = names[0]
        if whitening_set not in lw:
            raise ConversionError(f"{path} has no learned whitening {whitening_set!r}; it has {names}.")
        name, parts = whitening_set, lw[whitening_set]
        if not isinstance(parts, dict) or not ("ss" in parts or "ms" in parts):
            raise ConversionError(f"Invalid meta['Lw'][{name!r}] in {path}: expected a dict with 'ss' and/or 'ms'.")

    transforms = {}
    for key, field in (("ss", "single_scale"), ("ms", "multi_scale")):
        transforms[field] = None
        if key in parts:
            transforms[field] = _whitening_transform(parts[key], f"meta['Lw'][{name!r}][{key!r}] of {path}", descriptor_dim)
    return LearnedWhitening(name=name, **transforms)


def convert_cirtorch(input_path: str, arch: str, learned_whitening_set: str | None = None) -> RetrievalNetwork:
    """Convert a cirtorch checkpoint to a `RetrievalNetwork`.

    Args:
      input_path: the .pth file.
      arch: backbone name ("resnet101", "vgg16", ...).
      learned_whitening_set: which `meta['Lw']` set to keep when there are several.

    Raises:
      ConversionError: unreadable file, not a cirtorch checkpoint, wrong architecture,
        or keys that do not fit (all listed).
    """
    architecture = get_architecture(arch)
    checkpoint = load_torch_file(input_path, EXPECTED)
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        found = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(
            f"{input_path} is not a cirtorch checkpoint: it has no 'state_dict' (found {found}). Expected {EXPECTED}. "
            "For a plain torchvision state dict use --format torchvision."
        )
    meta = checkpoint.get("meta") or {}
    if not isinstance(meta, dict):
        raise ConversionError(f"Invalid 'meta' in {input_path}: expected a dict, got {type(meta).__name__}.")

    state_dict = {str(key): to_numpy(value, key) for key, value in checkpoint["state_dict"].items()}
    has_whitening_layer = "whiten.weight" in state_dict
    _check_meta(meta, arch, has_whitening_layer, input_path)

    whitening_dim = None
    if has_whitening_layer:
        whitening_dim = int(state_dict["whiten.weight"].shape[0])
    input_convention = _input_convention(meta)
    spec = NetworkSpec(arch=arch, input_convention=input_convention, whitening_dim=whitening_dim)
    variables = key_mapping.map_weights(
        spec,
        state_dict,
        source_key_for=lambda flax_path: cirtorch_source_key(arch, flax_path),
        is_ignored=_is_ignored,
        source=f"cirtorch checkpoint {input_path}",
    )

    learned_whitening = None
    if "Lw" in meta:
        descriptor_dim = whitening_dim or architecture.feature_dim
        learned_whitening = parse_learned_whitening(meta["Lw"], descriptor_dim, learned_whitening_set, input_path)
    elif learned_whitening_set is not None:
        raise ConversionError(f"{input_path} has no meta['Lw'], so --learned_whitening_set cannot apply.")

    kept_meta = {field: meta[field] for field in KEPT_META_FIELDS if field in meta}
    metadata = {
        "format": "cirtorch",
        "file": os.path.basename(input_path),
        "sha256": file_sha256(input_path),
        "cirtorch_meta": _json_safe(kept_meta),
    }
    return RetrievalNetwork.from_params(
        arch, variables, input_convention, learned_whitening=learned_whitening, metadata=metadata
    )


def _json_safe(value: Any) -> Any:
    """Turn NumPy scalars and tuples inside `value` into plain JSON values."""
    if isinstance(value, dict):
        return {str(key): _json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(item) for item in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return repr(value)
