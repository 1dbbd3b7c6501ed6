"""Conversion of published retrieval and ImageNet weights into pire_jax network files.

Run as `python -m weights_conversion --format {cirtorch,torchvision,keras-onnx}
--arch {resnet50,resnet101,resnet152,vgg16} --input SOURCE --output OUT.msgpack`.
The output is one file that `pire_jax.models.load_network` reads without torch
(format described in `pire_jax.models.checkpoint`). torch is needed only to read
.pth sources.
"""

from pire_jax.models import RetrievalNetwork
from weights_conversion.cirtorch import convert_cirtorch
from weights_conversion.keras_onnx import convert_keras_onnx
from weights_conversion.key_mapping import ConversionError
from weights_conversion.torchvision import convert_torchvision

SOURCE_FORMATS = ("cirtorch", "torchvision", "keras-onnx")


def convert(source_format: str, arch: str, input_path: str, learned_whitening_set: str | None = None) -> RetrievalNetwork:
    """Convert source weights of `source_format` to a `RetrievalNetwork`.

    Raises:
      ConversionError: the source cannot be converted; the message lists every problem.
    """
    if source_format == "cirtorch":
        return convert_cirtorch(input_path, arch, learned_whitening_set=learned_whitening_set)
    if learned_whitening_set is not None:
        raise ConversionError(f"--learned_whitening_set applies to cirtorch checkpoints only, not {source_format!r}.")
    if source_format == "torchvision":
        return convert_torchvision(input_path, arch)
    if source_format == "keras-onnx":
        return convert_keras_onnx(input_path, arch)
    raise ConversionError(f"Unknown source format {source_format!r}; expected one of {SOURCE_FORMATS}.")


__all__ = ["SOURCE_FORMATS", "ConversionError", "convert"]
