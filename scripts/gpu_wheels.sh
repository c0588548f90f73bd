#!/usr/bin/env bash
# Makes wheels/ for scripts/gpu_check.sh on a machine without network: the packages nge needs that
# the GPU machine's python lacks (omegaconf and its antlr4 runtime), as pure-Python wheels.
# Run it here (with network), then carry wheels/ with the working tree.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
mkdir -p wheels
"$PY" -m pip wheel -q --disable-pip-version-check --no-deps -w wheels omegaconf==2.3.0 antlr4-python3-runtime==4.9.3
ls wheels
