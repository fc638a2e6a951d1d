#!/usr/bin/env bash
# Reruns the rounding-dependent tests (ctest label "numerics": the kernels against float64, the
# PyTorch oracles) under each OpenBLAS kernel this CPU can run, with 1 and 2 threads. OpenBLAS
# picks its kernel by CPU (Haswell on AVX2, SkylakeX/Cooperlake on AVX-512), and each rounds
# differently: a tolerance that holds for one kernel only fails here, on the machine that
# wrote it, not later on someone else's. oneDNN (the CPU convolutions and GEMMs) does the same, so each
# pass caps its instruction set to the same machine's (ONEDNN_MAX_CPU_ISA: AVX2 with Haswell,
# AVX512_CORE with SkylakeX, everything with Cooperlake): the Haswell passes are, for both
# libraries, an AVX2 machine. Needs a build in build/ (scripts/build.sh).
#   scripts/test-blas-matrix.sh [extra ctest arguments]
set -euo pipefail
cd "$(dirname "$0")/.."

flags=$(grep -m1 '^flags' /proc/cpuinfo 2>/dev/null || true)
has() { for f in "$@"; do [[ " $flags " == *" $f "* ]] || return 1; done; }
kernels=()
declare -A onednn_isa=([Haswell]=AVX2 [SkylakeX]=AVX512_CORE [Cooperlake]=ALL)
has avx2 fma && kernels+=(Haswell)
has avx512f avx512bw avx512dq avx512vl avx512cd && kernels+=(SkylakeX)
has avx512f avx512bw avx512dq avx512vl avx512cd avx512_bf16 && kernels+=(Cooperlake)
if [ ${#kernels[@]} -eq 0 ]; then
  echo "[blas-matrix] no AVX2 on this CPU (or not x86-64): only the default kernel was tested"
  exit 0
fi

export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-PASSIVE}  # two tests per two cores: see scripts/test.sh
failed=()
for kernel in "${kernels[@]}"; do
  for threads in 1 2; do
    echo "[blas-matrix] OPENBLAS_CORETYPE=$kernel ONEDNN_MAX_CPU_ISA=${onednn_isa[$kernel]} OMP_NUM_THREADS=$threads"
    log=$(mktemp)
    if OPENBLAS_CORETYPE=$kernel ONEDNN_MAX_CPU_ISA=${onednn_isa[$kernel]} OMP_NUM_THREADS=$threads \
        ctest --test-dir build -L numerics --output-on-failure -j "$(nproc)" "$@" >"$log" 2>&1; then
      grep -E 'tests passed|tests failed' "$log"
    else
      cat "$log"
      failed+=("$kernel/$threads")
    fi
    rm -f "$log"
  done
done
if [ ${#failed[@]} -gt 0 ]; then
  echo "[blas-matrix] FAILED under: ${failed[*]}"
  exit 1
fi
echo "[blas-matrix] passed under every kernel this CPU runs: ${kernels[*]} (1 and 2 threads)"
