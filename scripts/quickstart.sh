#!/usr/bin/env bash
# Sets everything up and runs a real NGE search on Fashion-MNIST (preset `quick`, about 5 minutes
# on 2 CPU cores). Extra arguments go to `nge search`, e.g. scripts/quickstart.sh --out runs/first
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -f "$FMNIST/train-images-idx3-ubyte.gz" ]; then
  if [ "$(id -u)" = 0 ]; then
    (apt-get install -y -qq dataset-fashion-mnist || { apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist; }) >/dev/null
  elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    (sudo apt-get install -y -qq dataset-fashion-mnist || { sudo apt-get update -qq && sudo apt-get install -y -qq dataset-fashion-mnist; }) >/dev/null
  else
    echo "quickstart: Fashion-MNIST is missing: install Debian's dataset-fashion-mnist, or run '.venv/bin/nge search --preset quick data.root=DIR' with DIR holding the four idx .gz files" >&2
    exit 1
  fi
fi
exec .venv/bin/nge search --preset quick "$@"
