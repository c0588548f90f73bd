#!/usr/bin/env bash
# The prepared GPU check: one call, at most about 8 minutes on one GPU, no network needed.
#
#   scripts/gpu_check.sh OUT [--cpu-smoke]
#
# Uses the machine's own python3 (a CUDA build of torch); installs what it lacks from wheels/
# (made beforehand, with network, by scripts/gpu_wheels.sh) and nge itself without dependencies,
# then runs scripts/gpu_check.py, which writes OUT/gpu_check.json and OUT/gpu_check.md.
# Without a GPU it says so in one line and exits 1; --cpu-smoke runs every step on the CPU at
# smoke size instead, to check the script.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ $# -lt 1 ]; then
  echo "usage: scripts/gpu_check.sh OUT [--cpu-smoke]" >&2
  exit 2
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
  echo "gpu_check: $PY has no torch; run it with the python that has a CUDA build of torch (PYTHON=...)" >&2
  exit 1
fi
missing=$("$PY" - <<'PY'
import importlib.util as u
need = {"omegaconf": "omegaconf antlr4-python3-runtime", "yaml": "pyyaml", "matplotlib": "matplotlib", "PIL": "pillow", "tqdm": "tqdm", "numpy": "numpy", "pytest": "pytest", "hypothesis": "hypothesis"}
print(" ".join(pkg for mod, pkg in need.items() if u.find_spec(mod) is None))
PY
)
if [ -n "$missing" ]; then
  if [ ! -d wheels ]; then
    echo "gpu_check: missing $missing and no wheels/ folder; make it with scripts/gpu_wheels.sh where there is network" >&2
    exit 1
  fi
  # --no-deps: the wheels are complete (omegaconf and its antlr4 runtime); the rest is on the machine
  "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-index --no-deps --find-links wheels $missing
fi
# nge itself, without dependencies, unless this python has it already (falls back to the source tree)
if ! "$PY" -c "import nge" 2>/dev/null \
    && ! "$PY" -m pip install -q --disable-pip-version-check --root-user-action=ignore --no-deps --no-index \
        --no-build-isolation -e . 2>/dev/null; then
  export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
exec "$PY" scripts/gpu_check.py "$@"
