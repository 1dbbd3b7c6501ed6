#!/usr/bin/env bash
# Set up everything on a fresh machine and run the test suite.
# Tests on real data run when PIRE_DATA_ROOT and PIRE_WEIGHTS_DIR are set (as .ci/run does).
# Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup_venv.sh test
python -m pytest -q "$@"
