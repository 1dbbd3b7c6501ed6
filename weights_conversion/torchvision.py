"""Converter for torchvision ImageNet state dicts (`resnet50/101/152`, `vgg16`) into GeM networks.

The state dict is the one torchvision's model zoo distributes: ResNet keys `conv1.*`,
`bn1.*`, `layer{1..4}.{block}.*`, VGG16 keys `features.{index}.*`. The classifier
(`fc.*`, `classifier.*`) is dropped because a GeM network pools the last
convolutional activations instead. GeM's p is set to 3, the initial value of
Radenović et al. (TPAMI 2018), since an ImageNet classifier has no trained p.
"""

import os

import numpy as np

from pire_jax.models import DEFAULT_GEM_P, IMAGENET_RGB, RetrievalNetwork, file_sha256, get_architecture
from pire_jax.models.retrieval_network import NetworkSpec
from weights_conversion import key_mapping
from weights_conversion.key_mapping import ConversionError
from weights_conversion.torch_files import load_torch_file, to_numpy

EXPECTED = "a torchvision state dict (an OrderedDict of tensors, as torchvision's model zoo distributes)"

TORCHVISION_RESNET_KEYS = {name: name for name in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")}

GEM_P_PATH = ("params", "pool", "p")


def torchvision_source_key(arch: str, flax_path: key_mapping.FlaxPath) -> str | None:
    """Return the torchvision key of a Flax variable, or None for GeM's p, which torchvision lacks."""
    collection, top, *rest = flax_path
    if top == "pool":
        return None
    if arch.startswith("resnet"):
        return key_mapping.resnet_source_key((collection, *rest), TORCHVISION_RESNET_KEYS)
    return key_mapping.vgg16_torch_source_key((collection, *rest), prefix="features")


def _is_ignored(key: str) -> bool:
    return key.endswith(".num_batches_tracked") or key.startswith(("fc.", "classifier."))


def convert_torchvision(input_path: str, arch: str) -> RetrievalNetwork:
    """Convert a torchvision ImageNet state dict to a GeM `RetrievalNetwork` with p = 3 and no whitening.

    Raises:
      ConversionError: unreadable file, not a state dict, or keys that do not fit (all listed).
    """
    get_architecture(arch)
    state_dict = load_torch_file(input_path, EXPECTED)
    if isinstance(state_dict, dict) and "state_dict" in state_dict:
        raise ConversionError(
            f"{input_path} wraps its weights in a 'state_dict' entry, as cirtorch checkpoints do; "
            "use --format cirtorch for it."
        )
    if not isinstance(state_dict, dict):
        raise ConversionError(f"{input_path} contains a {type(state_dict).__name__}; expected {EXPECTED}.")

    weights = {str(key): to_numpy(value, key) for key, value in state_dict.items()}
    spec = NetworkSpec(arch=arch, input_convention=IMAGENET_RGB, whitening_dim=None)
    variables = key_mapping.map_weights(
        spec,
        weights,
        source_key_for=lambda flax_path: torchvision_source_key(arch, flax_path),
        is_ignored=_is_ignored,
        source=f"torchvision state dict {input_path}",
        defaults={GEM_P_PATH: np.asarray([DEFAULT_GEM_P], np.float32)},
    )
    metadata = {"format": "torchvision", "file": os.path.basename(input_path), "sha256": file_sha256(input_path)}
    return RetrievalNetwork.from_params(arch, variables, IMAGENET_RGB, metadata=metadata)
