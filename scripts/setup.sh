#!/usr/bin/env bash
# Creates .venv (if missing) and installs nge with its dependencies. Sourced by the other scripts.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# torch 2.13.0 is pinned here (the CPU build installs quickly); pyproject.toml accepts torch >= 2.4.
.venv/bin/python -m pip install -q --disable-pip-version-check torch==2.13.0
.venv/bin/python -m pip install -q --disable-pip-version-check -e ".[dev]"
