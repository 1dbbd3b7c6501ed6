#!/usr/bin/env bash
# Create .venv (if missing) and install the project with the given extras, e.g. "test".
# Sourced by demo.sh and run_tests.sh; leaves the environment activated.
set -euo pipefail
extras=${1:-}
if [[ ! -x .venv/bin/python ]]; then
  python3 -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
python -m pip install --quiet --upgrade pip
if [[ -n "$extras" ]]; then
  python -m pip install --quiet -e ".[$extras]"
else
  python -m pip install --quiet -e .
fi
