#!/usr/bin/env bash
# The one command that verifies handgrad on a GPU machine, most valuable results first, each
# written to $OUT/summary.md as soon as it is known (a run cut short still reports what it did):
#   1. the CUDA GoogleTests (every CUDA kernel against its CPU twin; they must run, not skip),
#      then the CPU ones
#   2. the PyTorch oracles (both devices), gradcheck on the GPU, the CLI tests, `report --quick`;
#      compute-sanitizer memcheck/racecheck on a few small tests, where it works
#   3. benchmarks side by side with PyTorch (einsum, Q2, Q3 in FP32 with and without a CUDA
#      graph, and in TF32)
#   4. a timed 2-epoch Q3 run
# Budget: 6 minutes on an H200 (one 15-minute window holds the machine's start, a run and a rerun).
#
#   scripts/stage-gpu.sh          (here: build for sm_90 into stage/)
#   scripts/gpu-check.sh          (there: uses stage/, or build/ if there is no stage/)
#
# Writes its logs and JSON under $OUT (or gpu-check-out/). --allow-no-gpu runs the same steps
# on a machine without a GPU (CUDA tests then skip), to check the script itself.
set -uo pipefail
cd "$(dirname "$0")/.."
ALLOW_NO_GPU=0
[ "${1:-}" = "--allow-no-gpu" ] && ALLOW_NO_GPU=1
OUTDIR="${OUT:-gpu-check-out}"
mkdir -p "$OUTDIR"
SUMMARY="$OUTDIR/summary.md"
T0=$(date +%s)
PY="${HG_PYTHON:-python3}"  # the python3 that has torch and numpy
fail=0
note() { echo "[gpu-check $(( $(date +%s) - T0 ))s] $*"; }
# record STEP RESULT [ok|FAIL|skipped]: one summary row, written at once.
record() {
  echo "| $1 | $2 | ${3:-ok} | $(( $(date +%s) - T0 ))s |" >> "$SUMMARY"
  [ "${3:-ok}" != FAIL ] || fail=1
}
# step NAME LIMIT LOG CMD...: runs CMD under a time limit into LOG, records its last line.
step() {
  local name=$1 limit=$2 log="$OUTDIR/$3"
  shift 3
  note "$name"
  timeout "$limit" "$@" > "$log" 2>&1
  local rc=$?
  local last
  last=$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-200)
  [ $rc = 124 ] && last="timed out after ${limit}s; $last"
  echo "    $last"
  record "$name" "$last" "$([ $rc = 0 ] && echo ok || echo FAIL)"
  return $rc
}

if [ -d stage/bin ]; then BIN=stage/bin; COMMIT=$(cat stage/COMMIT 2>/dev/null || echo unknown)
else BIN=build; COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown); fi
REAL_HG="$BIN/handgrad"
REAL_TESTS="$BIN/handgrad_tests"; [ -x "$REAL_TESTS" ] || REAL_TESTS=build/tests/handgrad_tests
REAL_BENCH="$BIN/bench_einsum"; [ -x "$REAL_BENCH" ] || REAL_BENCH=build/bench/bench_einsum

# Libraries: what stage/ carries, then this machine's cuBLAS / cuDNN (CUDA toolkit or the
# nvidia-* wheels that come with PyTorch). They are set for handgrad's own binaries only,
# through wrappers: PyTorch's processes keep their own libraries.
LIBS="$(pwd)/stage/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
PYLIBS=$($PY - <<'PYEOF' 2>/dev/null
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except Exception:
    roots = []
dirs = set()
for r in roots:
    for pat in ("*/lib/libcublas.so*", "*/lib/libcudnn.so*", "*/*/lib/libcublas.so*", "*/*/lib/libcudnn*.so*"):
        for f in glob.glob(os.path.join(r, pat)):
            dirs.add(os.path.dirname(f))
print(":".join(sorted(dirs)))
PYEOF
)
[ -n "$PYLIBS" ] && LIBS="$LIBS:$PYLIBS"
WRAP=$(mktemp -d)
trap 'rm -rf "$WRAP"' EXIT
for b in "$REAL_HG" "$REAL_TESTS" "$REAL_BENCH"; do
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
    "$LIBS" "$(cd "$(dirname "$b")" && pwd)/$(basename "$b")" > "$WRAP/$(basename "$b")"
  chmod +x "$WRAP/$(basename "$b")"
done
HG="$WRAP/handgrad"; TESTS="$WRAP/handgrad_tests"; BENCH="$WRAP/bench_einsum"
[ -d stage/data/fashion-mnist ] && export HANDGRAD_DATA="$(pwd)/stage/data/fashion-mnist"

GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
if [ -z "$GPU" ]; then
  if [ "$ALLOW_NO_GPU" = 1 ]; then GPU="none (dry run)"; else echo "gpu-check: no GPU (nvidia-smi found none); --allow-no-gpu to dry-run"; exit 2; fi
fi
DEV=cuda; [ "$GPU" = "none (dry run)" ] && DEV=cpu
printf '| step | result | status | at |\n|---|---|---|---|\n' > "$SUMMARY"
record "device" "$GPU"
record "commit" "$COMMIT (binaries from $BIN)"

note "checking shared libraries (ldd)"
for b in "$REAL_HG" "$REAL_TESTS" "$REAL_BENCH"; do
  if LD_LIBRARY_PATH="$LIBS" ldd "$b" | grep -q "not found"; then
    LD_LIBRARY_PATH="$LIBS" ldd "$b" | grep "not found"
    record "libraries" "$b is missing libraries" FAIL
    exit 2
  fi
done
LD_LIBRARY_PATH="$LIBS" ldd "$REAL_HG" | grep -E "cublas|cudnn|gomp|blas" | sed 's/^/    /'
"$HG" info | tee "$OUTDIR/info.txt"

# 1. GoogleTest: the CUDA tests first (they fail, not skip, where a GPU is present).
step "GoogleTest, CUDA" 240 gtest_cuda.log "$TESTS" --gtest_brief=1 --gtest_filter='*Cuda*' \
    --gtest_output="json:$OUTDIR/gtest_cuda.json"
grep -E "^\[  FAILED|Failure" "$OUTDIR/gtest_cuda.log" | head -20
if [ "$DEV" = cuda ] && grep -q '"result": "SKIPPED"' "$OUTDIR/gtest_cuda.json" 2>/dev/null; then
  record "GoogleTest, CUDA" "CUDA tests were skipped on a GPU machine" FAIL
fi
step "GoogleTest, CPU" 120 gtest_cpu.log "$TESTS" --gtest_brief=1 --gtest_filter='-*Cuda*'

# 2. Oracles (each runs the CPU and, where there is one, the GPU), gradcheck, CLI, report.
step "oracle: einsum vs torch" 120 oracle.log env HG_ORACLE_CASES=80 $PY tests/oracle_einsum.py "$HG"
step "oracle: Q2 MLP vs the course loop" 180 oracle_mlp.log $PY tests/oracle_mlp.py "$HG"
step "oracle: Q3 ResNet18 vs torch float64" 180 oracle_transfer.log $PY tests/oracle_transfer.py "$HG"
grep -E "SGD steps|eval logits|FAIL" "$OUTDIR/oracle_transfer.log" | cut -c1-220
step "oracle: checkpoints" 60 oracle_checkpoint.log $PY tests/oracle_checkpoint.py "$HG"
step "gradcheck --device $DEV" 60 gradcheck.log "$HG" gradcheck all --device $DEV
step "CLI bad input" 120 cli_bad_input.log $PY tests/cli_bad_input.py "$HG"
step "report --quick" 240 cli_report.log env HG_REPORT_OUT="$OUTDIR/results" $PY tests/cli_report.py "$HG"

# compute-sanitizer on a few small CUDA tests (60 s each at most): it works on some of these
# machines and refuses the device on others.
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
if [ "$DEV" = cuda ] && [ -n "$SAN" ]; then
  for tool in memcheck racecheck; do
    timeout 60 "$SAN" --tool $tool --error-exitcode 3 --target-processes all "$TESTS" --gtest_brief=1 \
        --gtest_filter='CudaKernels.MulContiguousAndUnaligned:CudaKernels.StridedCopyPermutesDiagonalsBroadcasts:MlpCuda.StepKernelsMatchCpuTwins' \
        > "$OUTDIR/sanitizer_$tool.log" 2>&1
    rc=$?
    last=$(grep -E "ERROR SUMMARY|RACECHECK SUMMARY|error|refus|not supported" "$OUTDIR/sanitizer_$tool.log" | tail -1 | cut -c1-200)
    if [ $rc = 0 ]; then record "compute-sanitizer $tool" "${last:-clean}"
    elif [ $rc = 3 ]; then record "compute-sanitizer $tool" "$last" FAIL
    else record "compute-sanitizer $tool" "did not run here (rc $rc): ${last:-see sanitizer_$tool.log}" skipped; fi
  done
else
  record "compute-sanitizer" "not available on this machine" skipped
fi

# 3. Benchmarks next to PyTorch on the same device.
step "bench: einsum vs torch.einsum" 120 compare.log $PY bench/compare_pytorch.py --bench "$BENCH" --device $DEV --repeats 1 \
    --min-time 0.1 --json "$OUTDIR/compare_$DEV.json"
step "bench: Q2 MLP vs torch eager" 120 compare_mlp.log $PY bench/compare_mlp.py --handgrad "$HG" --device $DEV \
    --json "$OUTDIR/compare_mlp_$DEV.json"
# (one round each: every row is two fresh processes, and device time is short)
step "bench: Q3 step FP32 vs torch" 120 compare_transfer.log $PY bench/compare_transfer.py --handgrad "$HG" \
    --device $DEV --rounds 1 --json "$OUTDIR/compare_transfer_$DEV.json"
if [ "$DEV" = cuda ]; then
  step "bench: Q3 step FP32, CUDA graph" 120 compare_transfer_graph.log $PY bench/compare_transfer.py --handgrad "$HG" \
      --device cuda --cuda-graph --rounds 1 --json "$OUTDIR/compare_transfer_cuda_graph.json"
  step "bench: Q3 step TF32 vs torch" 120 compare_transfer_tf32.log $PY bench/compare_transfer.py --handgrad "$HG" \
      --device cuda --tf32 --rounds 1 --json "$OUTDIR/compare_transfer_cuda_tf32.json"
  # 4. A timed 2-epoch run, with the cuDNN algorithms chosen by timing (listed in its log).
  t_start=$(date +%s.%N)
  step "Q3: 2 epochs, batch 64" 180 q3_train.log "$HG" transfer train --weights none --device cuda --epochs 2 \
      --batch-size 64 --cudnn-find --out-dir "$OUTDIR/q3" --no-plot
  record "Q3: 2 epochs, wall" "$($PY -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 2))" \
      "$(date +%s.%N)" "$t_start") s, data loading and evaluation included"
fi

# The tables.
$PY - "$OUTDIR" <<'PYEOF' >> "$SUMMARY"
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
for name in ("gtest_cuda.json",):
    g = load(name)
    if g:
        tests = [t for s in g["testsuites"] for t in s["testsuite"]]
        skipped = sum(1 for t in tests if t.get("result") == "SKIPPED")
        failed = [t["name"] for t in tests if t.get("failures")]
        print(f"\nCUDA GoogleTests: {len(tests) - len(failed) - skipped} passed, {len(failed)} failed "
              f"{failed if failed else ''}, {skipped} skipped")
c = load("compare_cuda.json") or load("compare_cpu.json")
if c:
    print("\n| equation | shape | handgrad ms | rate | % of ceiling | torch ms | speedup |\n|---|---|---|---|---|---|---|")
    for r in c["rows"]:
        shape = "x".join(str(v) for v in r["shape"].values())
        rate = f"{r['TFLOP/s']:.2f} TFLOP/s" if "TFLOP/s" in r else f"{r['GB/s']:.0f} GB/s" if "GB/s" in r else "-"
        ceil = r.get("pct_of_copy", r.get("pct_of_cublas"))
        ceil = f"{ceil:.0f}%" if ceil is not None else "-"
        print(f"| `{r['equation']}` | {shape} | {r['handgrad_ms']:.4f} | {rate} | {ceil} | {r['torch_ms']:.4f} | {r['speedup']:.2f}x |")
        if r.get("torch_opt_einsum_ms"):
            print(f"| `{r['equation']}` | {shape}, torch with opt_einsum | | | | {r['torch_opt_einsum_ms']:.4f} | {r['speedup_vs_opt_einsum']:.2f}x |")
m = load("compare_mlp_cuda.json") or load("compare_mlp_cpu.json")
if m:
    print("\n| Q2 implementation | us/iteration | vs torch eager | 5-lr sweep / 1 lr |\n|---|---|---|---|")
    for r in m["rows"]:
        sweep = f"{r['sweep5_ratio']:.2f}x" if "sweep5_ratio" in r else "-"
        print(f"| {r['impl']} | {r['us_per_iter']:.3f} | {r['speedup_vs_torch']:.1f}x | {sweep} |")
for name in ("compare_transfer_cuda.json", "compare_transfer_cuda_graph.json", "compare_transfer_cuda_tf32.json",
             "compare_transfer_cpu.json"):
    t = load(name)
    if t:
        print(f"\n| Q3 batch ({t.get('precision', 'FP32')}) | freeze | handgrad ms/step | torch ms/step | speedup |\n|---|---|---|---|---|")
        for r in t["rows"]:
            print(f"| {r['batch']} | {r['freeze']} | {r['handgrad_ms']:.2f} | {r['torch_ms']:.2f} | {r['speedup']:.2f}x |")
PYEOF
cat "$SUMMARY"
note "done: $([ $fail = 0 ] && echo PASS || echo FAIL)"
exit $fail
