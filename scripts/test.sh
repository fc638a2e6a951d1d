#!/usr/bin/env bash
# README command 2: install, build, and run the whole test suite (ctest; CUDA tests skip, with
# their reason, where no GPU is usable). Without arguments it then reruns the rounding-dependent
# tests under each OpenBLAS kernel this CPU can run (scripts/test-blas-matrix.sh), runs the whole
# suite once more under AddressSanitizer/UBSan/LeakSanitizer (scripts/test-sanitizers.sh; in that
# build the CUDA kernels run on the SIMT emulator: ctest -L simt), checks on that build that the Q3
# oracle and the emulated kernel tests still fail on known bugs (scripts/check-mutants.sh), and
# ends with each phase's time. Arguments go to ctest alone, e.g. scripts/test.sh -R oracle.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
times=()
# phase NAME CMD...: runs CMD and notes how long it took (and how it failed).
phase() {
  local name=$1 t0=$SECONDS rc=0
  shift
  "$@" || rc=$?
  times+=("$(printf '%-40s %5d s' "$name" $((SECONDS - t0)))$([ $rc = 0 ] || echo "  FAILED (exit $rc)")")
  return $rc
}
report_times() {
  echo "[test] time per phase:"
  printf '  %s\n' "${times[@]}"
  printf '  %-40s %5d s\n' "in all" $((SECONDS - start))
}
trap report_times EXIT
# ctest runs as many tests at once as there are cores, most of them OpenMP programs: a thread that
# spins at a barrier (libgomp's default) takes a core another test needs. Sleeping there instead
# took this suite's ctest from 221 to 168 s on 2 cores, with a quarter less CPU time.
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}
phase "setup (scripts/setup.sh)" scripts/setup.sh
phase "build (scripts/build.sh)" scripts/build.sh
phase "ctest" ctest --test-dir build --output-on-failure -j "$(nproc)" "$@"
if [ $# -eq 0 ]; then
  phase "OpenBLAS kernels (test-blas-matrix.sh)" scripts/test-blas-matrix.sh
  phase "sanitizers + SIMT kernels (test-sanitizers.sh)" scripts/test-sanitizers.sh
  phase "mutants (check-mutants.sh, on that build)" scripts/check-mutants.sh
fi
