#!/usr/bin/env bash
# Sets everything up and runs the linter and the test suite (CPU only, a few minutes on 2 cores).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check src tests scripts
.venv/bin/python -m pytest "$@"
