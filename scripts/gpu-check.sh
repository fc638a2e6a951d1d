#!/usr/bin/env bash
# The one command that verifies handgrad on a GPU machine: every CUDA test, the PyTorch oracles,
# the CLI tests, the benchmarks side by side with PyTorch, a timed 2-epoch Q3 run and a quick
# `handgrad report`,
# then a short summary table (device, commit, tests, GB/s, TFLOP/s, % of ceiling, speedup).
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
T0=$(date +%s)
PY="${HG_PYTHON:-python3}"  # the python3 that has torch and numpy
fail=0
note() { echo "[gpu-check $(( $(date +%s) - T0 ))s] $*"; }

if [ -d stage/bin ]; then BIN=stage/bin; COMMIT=$(cat stage/COMMIT 2>/dev/null || echo unknown)
else BIN=build; COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown); fi
HG="$BIN/handgrad"
TESTS="$BIN/handgrad_tests"; [ -x "$TESTS" ] || TESTS=build/tests/handgrad_tests
BENCH="$BIN/bench_einsum"; [ -x "$BENCH" ] || BENCH=build/bench/bench_einsum

# Libraries: what stage/ carries, then this machine's cuBLAS / cuDNN (CUDA toolkit or the
# nvidia-* wheels that come with PyTorch).
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
export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
[ -d stage/data/fashion-mnist ] && export HANDGRAD_DATA="$(pwd)/stage/data/fashion-mnist"

GPU=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
if [ -z "$GPU" ]; then
  if [ "$ALLOW_NO_GPU" = 1 ]; then GPU="none (dry run)"; else echo "gpu-check: no GPU (nvidia-smi found none); --allow-no-gpu to dry-run"; exit 2; fi
fi
note "device: $GPU; commit $COMMIT; binaries from $BIN"

note "checking shared libraries (ldd)"
for b in "$HG" "$TESTS" "$BENCH"; do
  if ldd "$b" | grep -q "not found"; then
    echo "gpu-check: $b is missing libraries:"; ldd "$b" | grep "not found"; exit 2
  fi
done
ldd "$HG" | grep -E "cublas|cudnn|gomp|blas" | sed 's/^/    /'

"$HG" info | tee "$OUTDIR/info.txt"

note "GoogleTest (all tests; CUDA ones must run, not skip)"
"$TESTS" --gtest_brief=1 --gtest_output="json:$OUTDIR/gtest.json" > "$OUTDIR/gtest.log" 2>&1
gtest_rc=$?
tail -5 "$OUTDIR/gtest.log"
[ $gtest_rc = 0 ] || { fail=1; grep -E "FAILED|Failure" "$OUTDIR/gtest.log" | head -30; }

note "PyTorch oracle, CLI bad input, quick report"
HG_ORACLE_CASES=80 $PY tests/oracle_einsum.py "$HG" > "$OUTDIR/oracle.log" 2>&1 || fail=1
tail -1 "$OUTDIR/oracle.log"
$PY tests/oracle_mlp.py "$HG" > "$OUTDIR/oracle_mlp.log" 2>&1 || fail=1
tail -1 "$OUTDIR/oracle_mlp.log"
$PY tests/oracle_transfer.py "$HG" > "$OUTDIR/oracle_transfer.log" 2>&1 || fail=1
tail -4 "$OUTDIR/oracle_transfer.log"
$PY tests/oracle_checkpoint.py "$HG" > "$OUTDIR/oracle_checkpoint.log" 2>&1 || fail=1
tail -1 "$OUTDIR/oracle_checkpoint.log"
$PY tests/cli_bad_input.py "$HG" > "$OUTDIR/cli_bad_input.log" 2>&1 || fail=1
tail -1 "$OUTDIR/cli_bad_input.log"
$PY tests/cli_report.py "$HG" > "$OUTDIR/cli_report.log" 2>&1 || fail=1
tail -1 "$OUTDIR/cli_report.log"

DEV=cuda; [ "$GPU" = "none (dry run)" ] && DEV=cpu
note "benchmarks vs torch.einsum on $DEV"
$PY bench/compare_pytorch.py --bench "$BENCH" --device $DEV --min-time 0.1 \
    --json "$OUTDIR/compare_$DEV.json" > "$OUTDIR/compare.log" 2>&1 || fail=1
cat "$OUTDIR/compare.log"

note "Q2 MLP: every implementation vs a PyTorch eager loop on $DEV"
$PY bench/compare_mlp.py --handgrad "$HG" --device $DEV --json "$OUTDIR/compare_mlp_$DEV.json" \
    > "$OUTDIR/compare_mlp.log" 2>&1 || fail=1
cat "$OUTDIR/compare_mlp.log"

note "Q3 ResNet18 step time vs PyTorch, and a 2-epoch run at batch 64 on $DEV"
$PY bench/compare_transfer.py --handgrad "$HG" --device $DEV --json "$OUTDIR/compare_transfer_$DEV.json" \
    > "$OUTDIR/compare_transfer.log" 2>&1 || fail=1
cat "$OUTDIR/compare_transfer.log"
if [ "$DEV" = cuda ]; then
  t_start=$(date +%s.%N)
  "$HG" transfer train --weights none --device cuda --epochs 2 --batch-size 64 \
      --out-dir "$OUTDIR/q3" --no-plot > "$OUTDIR/q3_train.log" 2>&1 || fail=1
  echo "2-epoch run, data loading and evaluation included: $(python3 -c "import sys; print(round(float(sys.argv[1]) - float(sys.argv[2]), 2))" "$(date +%s.%N)" "$t_start") s wall" \
      >> "$OUTDIR/q3_train.log"
  tail -3 "$OUTDIR/q3_train.log"
fi

# --quick keeps the check inside its time budget; the full grid is `handgrad report` on its own.
note "report --quick on $DEV"
"$HG" report --quick --device $DEV --out-dir "$OUTDIR/results" > "$OUTDIR/report.log" 2>&1 || fail=1
tail -8 "$OUTDIR/report.log"

# The summary table.
$PY - "$OUTDIR" "$GPU" "$COMMIT" <<'PYEOF' | tee "$OUTDIR/summary.md"
import json, os, sys
out, gpu, commit = sys.argv[1:4]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
g = load("gtest.json")
if g:
    tests = [t for s in g["testsuites"] for t in s["testsuite"]]
    skipped = sum(1 for t in tests if t.get("result") == "SKIPPED")
    failed = sum(1 for t in tests if t.get("failures"))
    print(f"| device | {gpu} |\n|---|---|\n| commit | {commit} |")
    print(f"| GoogleTest | {len(tests) - failed - skipped} passed, {failed} failed, {skipped} skipped |")
for log in ("oracle.log", "oracle_mlp.log", "oracle_transfer.log", "oracle_checkpoint.log", "cli_bad_input.log",
            "cli_report.log", "q3_train.log"):
    try:
        last = open(os.path.join(out, log)).read().strip().splitlines()[-1]
    except Exception:
        last = "missing"
    print(f"| {log[:-4]} | {last} |")
c = load("compare_cuda.json") or load("compare_cpu.json")
if c:
    print("\n| equation | shape | handgrad ms | rate | % of ceiling | torch ms | speedup |\n|---|---|---|---|---|---|---|")
    for r in c["rows"]:
        shape = "x".join(str(v) for v in r["shape"].values())
        rate = f"{r['TFLOP/s']:.2f} TFLOP/s" if "TFLOP/s" in r else f"{r['GB/s']:.0f} GB/s"
        ceil = r.get("pct_of_copy", r.get("pct_of_cublas"))
        ceil = f"{ceil:.0f}%" if ceil is not None else "-"
        print(f"| `{r['equation']}` | {shape} | {r['handgrad_ms']:.4f} | {rate} | {ceil} | {r['torch_ms']:.4f} | {r['speedup']:.2f}x |")
m = load("compare_mlp_cuda.json") or load("compare_mlp_cpu.json")
if m:
    print("\n| Q2 implementation | us/iteration | vs torch eager | 5-lr sweep / 1 lr |\n|---|---|---|---|")
    for r in m["rows"]:
        sweep = f"{r['sweep5_ratio']:.2f}x" if "sweep5_ratio" in r else "-"
        print(f"| {r['impl']} | {r['us_per_iter']:.3f} | {r['speedup_vs_torch']:.1f}x | {sweep} |")
t = load("compare_transfer_cuda.json") or load("compare_transfer_cpu.json")
if t:
    print("\n| Q3 batch | freeze | handgrad ms/step | torch ms/step | speedup |\n|---|---|---|---|---|")
    for r in t["rows"]:
        print(f"| {r['batch']} | {r['freeze']} | {r['handgrad_ms']:.2f} | {r['torch_ms']:.2f} | {r['speedup']:.2f}x |")
PYEOF

if [ "$GPU" != "none (dry run)" ] && grep -q '"result": "SKIPPED"' "$OUTDIR/gtest.json" 2>/dev/null; then
  echo "gpu-check: CUDA tests were skipped on a GPU machine"; fail=1
fi
note "done: $([ $fail = 0 ] && echo PASS || echo FAIL)"
exit $fail
