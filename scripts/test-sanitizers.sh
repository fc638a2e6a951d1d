#!/usr/bin/env bash
# The whole ctest suite again on a build with AddressSanitizer, UndefinedBehaviorSanitizer and
# LeakSanitizer (build-asan/, scripts/sanitizer-build.sh): every parser, kernel and command,
# including the hostile-input reproducers, must run without an out-of-bounds access, undefined
# behaviour or a leak. Its CUDA backend is the SIMT emulator (where the CUDA toolkit's headers
# are): every handwritten CUDA kernel runs against its CPU twin, checked access by access
# (ctest -L simt; UBSan stays on in the kernels).
#   scripts/test-sanitizers.sh [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/sanitizer-build.sh
# No Python module in this build (a sanitized extension cannot be loaded into python): the report
# packs question1-3.py unrun, and says so.
export HG_REPORT_ALLOW_NO_MODULE=1
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # two tests per two cores: see scripts/test.sh
# A whole pass that ends green leaves a stamp with the checksums of the programs it tested: the mutant
# check skips its controls (the same oracle and CUDA gtests) for exactly these programs.
stamp="$SAN_BUILD/ctest-passed.sha256"
rm -f "$stamp"
# Left to the first pass: the mutants' patch test (the mutant check runs on this build next), the
# report's relative-path variants (cli.report_quick's code with other folder names; it runs here)
# and the GPU check's deadline (a shell script driving the main build's binaries, nothing of this
# build).
ctest --test-dir "$SAN_BUILD" --output-on-failure -j "$(nproc)" \
  -E '^(mutants\.|cli\.report_relative_out_dir|cli\.run_sh_from_another_folder|scripts\.gpu_check_deadline)$' "$@"
if [ $# -eq 0 ]; then
  (cd "$SAN_BUILD" && sha256sum handgrad $([ ! -f tests/handgrad_tests ] || echo tests/handgrad_tests)) >"$stamp"
fi
