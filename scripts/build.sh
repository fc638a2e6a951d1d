#!/usr/bin/env bash
# Configures and builds handgrad into build/ (Release). Extra arguments go to cmake, e.g.
#   scripts/build.sh -DCMAKE_CUDA_ARCHITECTURES=90
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
cmake -S . -B "${HANDGRAD_BUILD_DIR:-build}" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
cmake --build "${HANDGRAD_BUILD_DIR:-build}" -j "$(nproc)"
