"""GeM retrieval networks (ResNet and VGG16 backbones), their input conventions and their file format."""

from pire_jax.models.architectures import ARCHITECTURES, get_architecture
from pire_jax.models.checkpoint import CheckpointError, file_sha256, load_network, save_network
from pire_jax.models.input_convention import CAFFE_BGR, IMAGENET_RGB, INPUT_CONVENTIONS, InputConvention
from pire_jax.models.retrieval_network import (
    DEFAULT_GEM_P,
    LearnedWhitening,
    NetworkSpec,
    RetrievalNetwork,
    WhiteningTransform,
)

__all__ = [
    "ARCHITECTURES",
    "CAFFE_BGR",
    "DEFAULT_GEM_P",
    "IMAGENET_RGB",
    "INPUT_CONVENTIONS",
    "CheckpointError",
    "InputConvention",
    "LearnedWhitening",
    "NetworkSpec",
    "RetrievalNetwork",
    "WhiteningTransform",
    "file_sha256",
    "get_architecture",
    "load_network",
    "save_network",
]
