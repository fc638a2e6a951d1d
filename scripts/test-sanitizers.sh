#!/usr/bin/env bash
# The whole ctest suite again on a CPU-only build with AddressSanitizer, UndefinedBehaviorSanitizer
# and LeakSanitizer (build-asan/): every parser, kernel and command, including the hostile-input
# reproducers, must run without an out-of-bounds access, undefined behaviour or a leak.
#   scripts/test-sanitizers.sh [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# -O1 -g1 (line tables: stack traces still name file and line) compiles in less than half the time
# of RelWithDebInfo's -O2 -g (tests/test_cnn.cpp: 8.7 s, not 19.6 s).
HANDGRAD_BUILD_DIR=build-asan scripts/build.sh -DHANDGRAD_CUDA=OFF -DHANDGRAD_BENCH=OFF -DHANDGRAD_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" \
  "-DCMAKE_CXX_FLAGS=$SAN" "-DCMAKE_EXE_LINKER_FLAGS=$SAN"
# Leaks in the runtime libraries' own thread pools at exit are theirs, not handgrad's.
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
# No Python module in this build (a sanitized extension cannot be loaded into python): the report
# packs question1-3.py unrun, and says so.
export HG_REPORT_ALLOW_NO_MODULE=1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # two tests per two cores: see scripts/test.sh
# The mutant check rebuilds without sanitizers; its patch test needs no second run. The report's
# relative-path variants run the code of cli.report_quick (here too) with other folder names: the
# first pass has them.
ctest --test-dir build-asan --output-on-failure -j "$(nproc)" \
  -E '^(mutants\.|cli\.report_relative_out_dir$|cli\.run_sh_from_another_folder$)' "$@"
