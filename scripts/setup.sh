#!/usr/bin/env bash
# Sets up diffnas on a fresh Debian/Ubuntu machine: the Fashion-MNIST data set and graphviz
# from apt, PyTorch (an existing install is kept, e.g. a CUDA build), then diffnas itself.
# usage: bash scripts/setup.sh [--test]     (--test adds pytest, ruff, playwright and Debian's chromium for the
#                                           browser tests of the HTML report; no browser is downloaded)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] || need+=(dataset-fashion-mnist)
command -v dot >/dev/null 2>&1 || need+=(graphviz)
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || need+=(chromium)
fi
if [ ${#need[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${need[@]}" >/dev/null
  else
    echo "setup: please install ${need[*]} with your package manager" >&2
  fi
fi

python -c "import torch" 2>/dev/null || python -m pip install -q "torch==2.13.0"
extra=""
[ "${1:-}" = "--test" ] && extra="[test]"
python -m pip install -q -e ".${extra}"
echo "setup: diffnas $(python -c 'import diffnas; print(diffnas.__version__)') ready"
