#!/usr/bin/env bash
# README command 2: install, build, and run the whole test suite (ctest; CUDA tests skip, with
# their reason, where no GPU is usable). Without arguments it then reruns the rounding-dependent
# tests under each OpenBLAS kernel this CPU can run (scripts/test-blas-matrix.sh), checks that
# the Q3 oracle still fails on known bugs (scripts/check-mutants.sh), and runs the whole suite
# once more under AddressSanitizer/UBSan/LeakSanitizer (scripts/test-sanitizers.sh). Arguments go
# to ctest alone, e.g. scripts/test.sh -R oracle.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/build.sh
ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
if [ $# -eq 0 ]; then
  scripts/test-blas-matrix.sh
  scripts/check-mutants.sh
  scripts/test-sanitizers.sh
fi
