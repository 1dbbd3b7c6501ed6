#!/usr/bin/env bash
# Set up everything on a fresh machine and run the main job on its embedded default:
# tuned PIRE with the real Keras VGG16-GeM on the scikit-image demo dataset.
# Extra arguments go to experiments.attack_queries (e.g. --output_dir).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh
scripts/fetch_vgg16_weights.sh weights
# The six demo queries share one shape, so one batch of six compiles once.
python -m experiments.attack_queries --weights weights/vgg16_gem_keras.msgpack --batch_size 6 "$@"
