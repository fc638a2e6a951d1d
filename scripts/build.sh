#!/usr/bin/env bash
# Configures and builds handgrad into build/ (Release; $HANDGRAD_BUILD_DIR names another folder).
# A folder configured before keeps its configuration (cmake --build configures again by itself
# when a CMakeLists.txt changes); extra arguments go to cmake and configure it again, e.g.
#   scripts/build.sh -DCMAKE_CUDA_ARCHITECTURES=90
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -z "${CUDACXX:-}" ] && ! command -v nvcc >/dev/null 2>&1 && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
dir=${HANDGRAD_BUILD_DIR:-build}
if [ $# -gt 0 ] || [ ! -f "$dir/CMakeCache.txt" ]; then
  cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release "$@" >/dev/null
fi
cmake --build "$dir" -j "$(nproc)"
