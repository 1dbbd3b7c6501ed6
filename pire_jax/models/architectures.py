"""Registry of the convolutional backbones a GeM retrieval network can use."""

import dataclasses
from typing import Callable

import flax.linen as nn

from pire_jax.models import resnet, vgg


@dataclasses.dataclass(frozen=True)
class Architecture:
    """A backbone: its registry name, a constructor of its Flax module, and its output channels."""

    name: str
    build_features: Callable[[], nn.Module]
    feature_dim: int


ARCHITECTURES = {
    "resnet50": Architecture("resnet50", resnet.ResNet50, 2048),
    "resnet101": Architecture("resnet101", resnet.ResNet101, 2048),
    "resnet152": Architecture("resnet152", resnet.ResNet152, 2048),
    "vgg16": Architecture("vgg16", vgg.VGG16Features, 512),
}


def get_architecture(name: str) -> Architecture:
    """Look up a backbone by name, with an error that lists the known names."""
    if name not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {name!r}; expected one of {sorted(ARCHITECTURES)}.")
    return ARCHITECTURES[name]
