"""Convert cirtorch, torchvision or Keras ONNX weights into one pire_jax network file.

Example:
  python -m weights_conversion --format keras-onnx --arch vgg16 \
      --input vgg16_keras_imagenet_conv_base.onnx --output weights/vgg16_gem_keras.msgpack
"""

from absl import app, flags, logging

from pire_jax.models import ARCHITECTURES, save_network
from weights_conversion import SOURCE_FORMATS, ConversionError, convert

_FORMAT = flags.DEFINE_enum("format", None, SOURCE_FORMATS, "Format of the source weights.")
_ARCH = flags.DEFINE_enum("arch", None, sorted(ARCHITECTURES), "Backbone architecture of the source weights.")
_INPUT = flags.DEFINE_string("input", None, "Source weights file (.pth for cirtorch/torchvision, .onnx for keras-onnx).")
_OUTPUT = flags.DEFINE_string("output", None, "Converted network file to write (msgpack).")
_LEARNED_WHITENING_SET = flags.DEFINE_string(
    "learned_whitening_set",
    None,
    "cirtorch only: name of the meta['Lw'] whitening set to keep when the checkpoint has several.",
)
flags.mark_flags_as_required(["format", "arch", "input", "output"])


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}.")
    logging.info("Converting %s (%s, %s) to %s.", _INPUT.value, _FORMAT.value, _ARCH.value, _OUTPUT.value)
    try:
        network = convert(_FORMAT.value, _ARCH.value, _INPUT.value, _LEARNED_WHITENING_SET.value)
    except ConversionError as error:
        # One readable line instead of a traceback from inside torch or onnx.
        raise SystemExit(f"Conversion failed: {error}") from None

    save_network(network, _OUTPUT.value)
    whitening = "none"
    if network.learned_whitening is not None:
        whitening = network.learned_whitening.name or "unnamed set"
    logging.info(
        "Done: %s GeM network, p=%.4f, %d-d descriptors, learned whitening: %s.",
        network.arch,
        network.gem_p,
        network.descriptor_dim,
        whitening,
    )


if __name__ == "__main__":
    app.run(main)
