#!/usr/bin/env bash
# README command 2: install, build, and run the whole test suite (ctest). CUDA tests skip,
# with their reason, where no GPU is usable.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
