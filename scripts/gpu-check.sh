#!/usr/bin/env bash
# The one command that verifies handgrad on a GPU machine, inside one deadline of its own (a GPU
# is lent for 15 minutes in all, its 3-4 minute start included). Steps run most valuable first;
# each step's time limit is capped at the time left, a step that no longer fits is recorded as
# "skipped: deadline", and every row goes into $OUT/summary.md as soon as it is known:
#   0. probes (seconds): the GPU, ldd of every staged binary, `handgrad info`, torch /
#      torchvision / matplotlib / numpy, the NVIDIA libraries torch brings, the staged data. What
#      is missing makes the steps that need it skip with the reason instead of failing one by one
#   1. the CUDA GoogleTests (every CUDA kernel against its CPU twin; they must run, not skip)
#   2. the 2-epoch Q3 run, convolution algorithms chosen by timing (--cudnn-find), timed
#   3. one round of the Q3 step against PyTorch at batch 64 (frozen and full); the Python module,
#      compiled there for its Python from the staged core, and its GPU cases (pytest)
#   4. the PyTorch oracles (einsum, Q2, Q3, checkpoints; each on both devices), gradcheck on the
#      GPU, the CLI's bad-input tests, `report --quick`, the CPU GoogleTests
#   5. the Q3 step from a CUDA graph and in TF32, next to PyTorch (the rows a deadline cut first
#      before; the graph row is the only run of --cuda-graph outside the gtests)
#   6. compute-sanitizer memcheck / racecheck on a few small tests, where it works
#   7. benchmarks next to PyTorch: einsum, Q2
# A step runs in a session of its own; when it ends or runs out of time, its whole process group
# is killed (TERM, then KILL), so nothing it started outlives it. A signal to this script (the
# device tool's own time limit) kills the running step and still writes the summary.
#
#   scripts/stage-gpu.sh          (here: build for sm_90 into stage/)
#   scripts/gpu-check.sh [--deadline S] [--allow-no-gpu] [--only STEP[,STEP]] [--inject-hang STEP]
#                                  (there: uses stage/, or build/ if there is no stage/)
#
# --deadline S     the whole check ends by S seconds (default 400) plus a few for the summary
# --allow-no-gpu   run on a machine without a GPU (CUDA tests skip, the Q3 run is 3 CPU steps),
#                  to check the script itself
# --only STEPS     run only these steps (after the probes), by id: a second, short call reruns
#                  just what failed. Ids: gtest-cuda q3-train q3-bench oracle-einsum oracle-mlp
#                  python-module oracle-q3 oracle-checkpoint gradcheck cli-bad-input report-quick gtest-cpu
#                  bench-q3-graph bench-q3-tf32 bench-q3-lowering sanitizer-memcheck
#                  sanitizer-racecheck bench-einsum bench-q2
# --inject-hang S  replace step S's command (id or name) by one that hangs (ignoring SIGTERM,
#                  with a child): checks that a hung step is killed with its children and recorded
# Logs and JSON go under $OUT (or gpu-check-out/). Exit status: 0 when every step that ran
# passed and none was cut short (steps skipped for the deadline are listed, not failed).
set -uo pipefail
cd "$(dirname "$0")/.."
ALLOW_NO_GPU=0
DEADLINE=400
INJECT_HANG=""
ONLY=""
STEP_IDS="gtest-cuda q3-train q3-bench python-module oracle-einsum oracle-mlp oracle-q3 oracle-checkpoint gradcheck cli-bad-input
report-quick gtest-cpu bench-q3-graph bench-q3-tf32 bench-q3-lowering sanitizer-memcheck sanitizer-racecheck bench-einsum
bench-q2"
usage() { sed -n '/^#   scripts\/stage-gpu.sh/,/none was cut short/p' "$0" | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
  case "$1" in
    --allow-no-gpu) ALLOW_NO_GPU=1 ;;
    --deadline) DEADLINE=${2:-}; shift ;;
    --deadline=*) DEADLINE=${1#--deadline=} ;;
    --inject-hang) INJECT_HANG=${2:-}; shift ;;
    --only|--only=*)
      if [ "$1" = --only ]; then ONLY=${2:-}; shift; else ONLY=${1#--only=}; fi
      [ -n "$ONLY" ] || { echo "gpu-check: --only needs step ids, e.g. --only gtest-cuda,oracle-q3" >&2; exit 2; } ;;
    -h|--help) usage; exit 0 ;;
    *) echo "gpu-check: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
if ! [[ "$DEADLINE" =~ ^[0-9]+$ ]] || [ "$DEADLINE" -lt 10 ] || [ "$DEADLINE" -gt 86400 ]; then
  echo "gpu-check: --deadline must be a whole number of seconds from 10 to 86400, got '$DEADLINE'" >&2
  exit 2
fi
for id in ${ONLY//,/ }; do
  if ! [[ " ${STEP_IDS//$'\n'/ } " == *" $id "* ]]; then
    echo "gpu-check: --only: no step '$id'; the steps are: ${STEP_IDS//$'\n'/ }" >&2
    exit 2
  fi
done
# selected ID: whether --only lets step ID run.
selected() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
OUTDIR="${OUT:-gpu-check-out}"
mkdir -p "$OUTDIR"
SUMMARY="$OUTDIR/summary.md"
T0=$(date +%s)
END=$((T0 + DEADLINE))
RESERVE=3          # seconds kept for the closing tables
KILL_GRACE=3       # a step that ignores SIGTERM gets SIGKILL this much later
PY="${HG_PYTHON:-python3}"  # the python3 that has torch and numpy
fail=0
CURRENT=""         # the running step's process group, and its name
CURRENT_NAME=""
FINISHED=0
now() { date +%s; }
note() { echo "[gpu-check $(( $(now) - T0 ))s] $*"; }
# record STEP RESULT [STATUS [SECONDS]]: one summary row, written at once. STATUS: ok, FAIL,
# "cut: deadline" (a step stopped by the deadline), "skipped: <why>".
record() {
  local result=${2//|/\\|}
  echo "| $1 | ${result:0:200} | ${3:-ok} | ${4:--} | $(( $(now) - T0 ))s |" >> "$SUMMARY"
  [ "${3:-ok}" != FAIL ] || fail=1
}
printf '| step | result | status | took | at |\n|---|---|---|---|---|\n' > "$SUMMARY"

# What the probes found: HAVE[x] is empty when x is usable, else why not.
declare -A HAVE=([gpu]="no GPU (dry run)" [hg]="not probed" [tests]="not probed" [bench]="not probed"
                 [torch]="not probed" [torchvision]="not probed" [matplotlib]="not probed" [numpy]="not probed"
                 [data]="no FashionMNIST staged" [sanitizer]="no compute-sanitizer here"
                 [pymodule]="no staged Python module ingredients (stage/python: scripts/stage-gpu.sh)")
# missing NEEDS...: the reason the first unusable one gives, or nothing.
missing() {
  local n
  for n in "$@"; do [ -z "${HAVE[$n]}" ] || { echo "${HAVE[$n]}"; return; }; done
}

# step ID NAME NEED LIMIT "NEEDS" LOG CMD...: runs CMD in a session of its own under
# min(LIMIT, time left) into LOG, and records its last line. Not run at all when --only leaves
# it out; skipped, with the reason, when a probe found something it needs missing, or when fewer
# than NEED seconds are left; a command that exits 77 skipped itself (the oracles' code for
# "torch is missing"), as under ctest.
step() {
  local id=$1 name=$2 need=$3 limit=$4 needs=$5 log="$OUTDIR/$6"
  shift 6
  selected "$id" || return 0
  local why
  why=$(missing $needs)
  if [ -n "$why" ]; then
    note "$name: skipped ($why)"
    record "$name" "$why" "skipped: missing"
    return 0
  fi
  local left=$((END - RESERVE - KILL_GRACE - $(now)))
  # The injected hang must run to be cut, however slowly the steps before it went (a loaded or
  # sanitized machine): its estimate never skips it.
  local hang=0
  { [ "$name" = "$INJECT_HANG" ] || [ "$id" = "$INJECT_HANG" ]; } && hang=1
  [ "$hang" = 1 ] && need=1
  if [ "$left" -lt "$need" ]; then
    [ "$left" -lt 0 ] && left=0
    note "$name: skipped (needs ~${need}s, ${left}s left)"
    record "$name" "needs ~${need}s, ${left}s left" "skipped: deadline"
    return 0
  fi
  local cap=$limit
  [ "$left" -lt "$cap" ] && cap=$left
  [ "$hang" = 1 ] &&
    set -- bash -c 'trap "" TERM; (exec -a hg-injected-hang sleep 1000) & exec -a hg-injected-hang sleep 1000'
  note "$name (limit ${cap}s)"
  local t=$(now)
  # A background child of a script is never a process-group leader, so setsid makes the new
  # session in place: its pid is the group to kill. timeout signals that whole group, TERM
  # first and KILL KILL_GRACE seconds later.
  setsid timeout -k "$KILL_GRACE" "$cap" "$@" > "$log" 2>&1 < /dev/null &
  CURRENT=$! CURRENT_NAME=$name
  wait "$CURRENT"
  local rc=$?
  kill -KILL -- "-$CURRENT" 2>/dev/null  # anything the step left running
  CURRENT="" CURRENT_NAME=""
  local took=$(( $(now) - t ))
  local last status=ok
  last=$(grep -v '^\s*$' "$log" | tail -1 | cut -c1-200)
  # 124: timeout's TERM ended it; 137 at the limit: its KILL did (137 earlier: killed by someone
  # else, e.g. the OOM killer, a failure like any other).
  if [ $rc = 124 ] || { [ $rc = 137 ] && [ "$took" -ge "$cap" ]; }; then
    if [ "$cap" -lt "$limit" ]; then status="cut: deadline"; else status=FAIL; fi
    last="timed out after ${cap}s; $last"
  elif [ $rc = 77 ]; then
    status=skipped
  elif [ $rc != 0 ]; then
    status=FAIL
  fi
  echo "    $last"
  record "$name" "$last" "$status" "${took}s"
  return $rc
}

# The closing tables (also on a signal, so a check cut short still reports what it did).
finish() {
  [ "$FINISHED" = 1 ] && return
  FINISHED=1
  [ -n "$CURRENT" ] && kill -KILL -- "-$CURRENT" 2>/dev/null
  rm -rf "${WRAP:-}"
  timeout 10 "$PY" - "$OUTDIR" <<'PYEOF' >> "$SUMMARY" 2>/dev/null
import json, os, sys
out = sys.argv[1]
def load(name):
    try:
        return json.load(open(os.path.join(out, name)))
    except Exception:
        return None
g = load("gtest_cuda.json")
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
  local skipped cut verdict=PASS
  skipped=$(grep -c '| skipped: deadline |' "$SUMMARY")
  cut=$(grep -c '| cut: deadline |' "$SUMMARY")
  # A step cut short verified nothing: the check is incomplete, not passed.
  [ "$cut" -gt 0 ] && verdict=INCOMPLETE
  [ "$fail" = 1 ] && verdict=FAIL
  echo "" >> "$SUMMARY"
  echo "$verdict in $(( $(now) - T0 ))s of a ${DEADLINE}s deadline; $cut step(s) cut and $skipped skipped for the deadline" >> "$SUMMARY"
  cat "$SUMMARY"
  note "done: $verdict"
  [ "$verdict" = PASS ] || fail=1
}
on_signal() {
  record "${CURRENT_NAME:-gpu-check}" "killed: the check got SIG$1" FAIL
  finish
  exit 2
}
trap finish EXIT
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP' HUP

# ----- 0. Probes ---------------------------------------------------------------------------
if [ -d stage/bin ]; then BIN=stage/bin; COMMIT=$(cat stage/COMMIT 2>/dev/null || echo unknown)
else BIN=build; COMMIT=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown); fi
REAL_HG="$BIN/handgrad"
REAL_TESTS="$BIN/handgrad_tests"; [ -x "$REAL_TESTS" ] || REAL_TESTS=build/tests/handgrad_tests
REAL_BENCH="$BIN/bench_einsum"; [ -x "$REAL_BENCH" ] || REAL_BENCH=build/bench/bench_einsum

GPU=$(timeout 10 nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -1)
if [ -n "$GPU" ]; then
  HAVE[gpu]=""
elif [ "$ALLOW_NO_GPU" = 1 ]; then
  GPU="none (dry run)"
else
  echo "gpu-check: no GPU (nvidia-smi found none); --allow-no-gpu to dry-run" >&2
  record "device" "no GPU (nvidia-smi found none)" FAIL
  exit 2
fi
DEV=cuda; [ -n "${HAVE[gpu]}" ] && DEV=cpu
record "device" "$GPU"
record "commit" "$COMMIT (binaries from $BIN), deadline ${DEADLINE}s${ONLY:+, only $ONLY}"

# Python: one process imports each module and says what it found.
PYPROBE=$(timeout 30 "$PY" - <<'PYEOF' 2>&1
import glob, os
for mod in ("numpy", "torch", "torchvision", "matplotlib"):
    try:
        m = __import__(mod)
        extra = ""
        if mod == "torch":
            extra = f", CUDA {m.version.cuda}, GPU {'yes' if m.cuda.is_available() else 'no'}"
        print(f"{mod}=ok {m.__version__}{extra}")
    except Exception as e:
        print(f"{mod}=missing: {type(e).__name__}: {str(e)[:120]}")
# The cuBLAS / cuDNN that come with torch's nvidia-* wheels: handgrad's binaries use them.
dirs = set()
try:
    import nvidia
    for r in nvidia.__path__:
        for pat in ("*/lib/libcublas.so*", "*/lib/libcudnn.so*", "*/*/lib/libcublas.so*", "*/*/lib/libcudnn*.so*"):
            dirs.update(os.path.dirname(f) for f in glob.glob(os.path.join(r, pat)))
except Exception:
    pass
print("nvidia_libs=" + ":".join(sorted(dirs)))
PYEOF
)
for mod in numpy torch torchvision matplotlib; do
  line=$(grep "^$mod=" <<< "$PYPROBE")
  if [[ "$line" == "$mod=ok"* ]]; then HAVE[$mod]=""; record "probe: $mod" "${line#$mod=ok }"
  else
    HAVE[$mod]="$mod not importable by $PY"
    record "probe: $mod" "${line:-no answer from $PY: $(head -c 150 <<< "$PYPROBE")}" "skipped: missing"
  fi
done
PYLIBS=$(grep '^nvidia_libs=' <<< "$PYPROBE" | cut -d= -f2-)
LIBS="$(pwd)/stage/lib"
for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib; do [ -d "$d" ] && LIBS="$LIBS:$d"; done
[ -n "$PYLIBS" ] && LIBS="$LIBS:$PYLIBS"
record "probe: NVIDIA libraries from torch" "${PYLIBS:-none found}"

# Binaries: ldd must resolve every library (and every GLIBC/GLIBCXX version) with the
# libraries above. handgrad's own binaries get them through wrappers: PyTorch's processes keep
# their own.
WRAP=$(mktemp -d)
for pair in "hg:$REAL_HG" "tests:$REAL_TESTS" "bench:$REAL_BENCH"; do
  key=${pair%%:*}; b=${pair#*:}
  if [ ! -x "$b" ]; then HAVE[$key]="$b is not there"; record "probe: ldd $(basename "$b")" "not there" FAIL; continue; fi
  # "not found": a library, or a version of one (GLIBC_2.38, GLIBCXX_3.4.32); ldd -r also
  # resolves every symbol the binary itself calls. (cuBLAS and cuDNN are opened at their first
  # call, from LD_LIBRARY_PATH first: `handgrad info` below says which it found.)
  bad=$(LD_LIBRARY_PATH="$LIBS" timeout 10 ldd -r "$b" 2>&1 |
        grep -E "not found|undefined symbol: .*\($b\)|ldd: " | sort -u | tr '\n' ';')
  if [ -n "$bad" ]; then
    HAVE[$key]="$(basename "$b") cannot load: $bad"
    record "probe: ldd $(basename "$b")" "$bad" FAIL
    continue
  fi
  HAVE[$key]=""
  record "probe: ldd $(basename "$b")" "$(LD_LIBRARY_PATH="$LIBS" ldd "$b" | grep -oE "lib(cublas|cudnn|cudart|gomp|openblas|dnnl)[^ ]* => [^ ]*" | sed 's/ => / → /' | tr '\n' ' ')"
  printf '#!/bin/sh\nLD_LIBRARY_PATH="%s${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}" exec "%s" "$@"\n' \
    "$LIBS" "$(cd "$(dirname "$b")" && pwd)/$(basename "$b")" > "$WRAP/$(basename "$b")"
  chmod +x "$WRAP/$(basename "$b")"
done
HG="$WRAP/handgrad"; TESTS="$WRAP/handgrad_tests"; BENCH="$WRAP/bench_einsum"
if [ -z "${HAVE[hg]}" ]; then
  if timeout 20 "$HG" info > "$OUTDIR/info.txt" 2>&1; then
    record "probe: handgrad info" "$(grep -E "device auto|CUDA|GEMM|cuBLAS|cuDNN" "$OUTDIR/info.txt" | head -5 | tr '\n' ' ')"
  else
    HAVE[hg]="handgrad info failed: $(tail -1 "$OUTDIR/info.txt")"
    record "probe: handgrad info" "${HAVE[hg]}" FAIL
  fi
fi
[ -d stage/data/fashion-mnist ] && export HANDGRAD_DATA="$(pwd)/stage/data/fashion-mnist"
for d in "${HANDGRAD_DATA:-}" /usr/share/datasets/fashion-mnist data/fashion-mnist; do
  if [ -n "$d" ] && [ -f "$d/t10k-labels-idx1-ubyte.gz" ]; then HAVE[data]=""; export HANDGRAD_DATA="$d"; break; fi
done
record "probe: FashionMNIST" "${HANDGRAD_DATA:-none}" "$([ -z "${HAVE[data]}" ] && echo ok || echo "skipped: missing")"
[ -f stage/python/module.flags ] && HAVE[pymodule]=""
SAN=$(command -v compute-sanitizer || ls /usr/local/cuda/bin/compute-sanitizer 2>/dev/null | head -1)
[ -n "$SAN" ] && [ -z "${HAVE[gpu]}" ] && HAVE[sanitizer]=""
[ -z "${HAVE[matplotlib]}" ] || export HG_REPORT_ALLOW_NO_PLOTS=1  # the report's PDFs need it
# The report's question1-3.py run needs a module next to the binaries it uses: the staged binaries
# have none (the Python module step builds its own), so the report packs them unrun there.
export HG_REPORT_ALLOW_NO_MODULE=1

# ----- 1. CUDA GoogleTests (they fail, not skip, where a GPU is present) -----------------------
step gtest-cuda "GoogleTest, CUDA" 20 240 "tests" gtest_cuda.log "$TESTS" --gtest_brief=1 --gtest_filter='*Cuda*' \
    --gtest_output="json:$OUTDIR/gtest_cuda.json"
selected gtest-cuda && grep -E "^\[  FAILED|Failure" "$OUTDIR/gtest_cuda.log" | head -20
if selected gtest-cuda && [ "$DEV" = cuda ] && grep -q '"result": "SKIPPED"' "$OUTDIR/gtest_cuda.json" 2>/dev/null; then
  record "GoogleTest, CUDA" "CUDA tests were skipped on a GPU machine" FAIL
fi

# ----- 2. The 2-epoch Q3 run, algorithms chosen by timing (listed in its log) ------------------
if [ "$DEV" = cuda ]; then
  step q3-train "Q3: 2 epochs, batch 64, --cudnn-find" 60 180 "hg data" q3_train.log "$HG" transfer train --weights none \
      --device cuda --epochs 2 --batch-size 64 --cudnn-find --out-dir "$OUTDIR/q3" --no-plot
else
  step q3-train "Q3: 3 steps on the CPU (dry run of the 2-epoch run)" 10 60 "hg data" q3_train.log "$HG" transfer train \
      --weights none --device cpu --max-steps 3 --batch-size 64 --no-eval --out-dir "$OUTDIR/q3" --no-plot
fi

# ----- 3. One round of the Q3 step against PyTorch at batch 64 --------------------------------
step q3-bench "bench: Q3 step FP32 vs torch, batch 64" 30 120 "hg torch numpy data" compare_transfer.log \
    "$PY" bench/compare_transfer.py --handgrad "$HG" --device $DEV --rounds 1 --batch-sizes 64 \
    --json "$OUTDIR/compare_transfer_$DEV.json"

# The Python module: compiled here for this machine's Python (the staged core and flags), then
# its GPU cases (einsum on CUDA tensors, DLPack with torch's stream, state dicts on cuda:0) and a
# CPU one; where there is no GPU they are listed as skipped, with the reason.
step python-module "Python module: built here, its GPU cases" 60 240 "torch numpy pymodule" python_module.log \
    bash -c 'scripts/build-python-module.sh "$1" && PYTHONPATH="$(pwd)/stage/python" "$1" -m pytest -q -rs \
             -p no:cacheprovider tests/python/test_module.py -k "cuda or dlpack or gpu_models or torch_in_torch_out"' \
    _ "$PY"
selected python-module && grep -E "^SKIPPED|passed|failed" "$OUTDIR/python_module.log" 2>/dev/null | cut -c1-200

# ----- 4. Oracles (each runs the CPU and, where there is one, the GPU), gradcheck, CLI, report ---
step oracle-einsum "oracle: einsum vs torch" 20 90 "hg torch numpy" oracle.log env HG_ORACLE_CASES=80 "$PY" tests/oracle_einsum.py "$HG"
step oracle-mlp "oracle: Q2 MLP vs the course loop" 20 120 "hg torch numpy" oracle_mlp.log "$PY" tests/oracle_mlp.py "$HG"
step oracle-q3 "oracle: Q3 ResNet18 vs torch float64" 30 150 "hg torch torchvision numpy" oracle_transfer.log \
    "$PY" tests/oracle_transfer.py "$HG"
selected oracle-q3 && grep -E "SGD steps|eval logits|FAIL" "$OUTDIR/oracle_transfer.log" 2>/dev/null | cut -c1-220
step oracle-checkpoint "oracle: checkpoints" 10 60 "hg torch numpy" oracle_checkpoint.log "$PY" tests/oracle_checkpoint.py "$HG"
step gradcheck "gradcheck --device $DEV" 5 60 "hg" gradcheck.log "$HG" gradcheck all --device $DEV
step cli-bad-input "CLI bad input" 20 120 "hg numpy" cli_bad_input.log "$PY" tests/cli_bad_input.py "$HG"
step report-quick "report --quick" 40 240 "hg" cli_report.log env HG_REPORT_OUT="$OUTDIR/results" "$PY" tests/cli_report.py "$HG"
step gtest-cpu "GoogleTest, CPU" 20 120 "tests" gtest_cpu.log "$TESTS" --gtest_brief=1 --gtest_filter='-*Cuda*'

# ----- 5. The Q3 step from a CUDA graph and in TF32, next to PyTorch -------------------------
# (one round each: every row is two fresh processes, and device time is short)
step bench-q3-graph "bench: Q3 step FP32, CUDA graph" 40 120 "gpu hg torch numpy data" compare_transfer_graph.log \
    "$PY" bench/compare_transfer.py --handgrad "$HG" --device cuda --cuda-graph --rounds 1 \
    --json "$OUTDIR/compare_transfer_cuda_graph.json"
step bench-q3-tf32 "bench: Q3 step TF32 vs torch" 40 120 "gpu hg torch numpy data" compare_transfer_tf32.log \
    "$PY" bench/compare_transfer.py --handgrad "$HG" --device cuda --tf32 --rounds 1 \
    --json "$OUTDIR/compare_transfer_cuda_tf32.json"
# The tap-exact convolutions (cuBLAS) where the rule sends them, against cuDNN for every
# convolution: the rule's crossover was measured on a CPU. Two profiles of the batch-64 step.
step bench-q3-lowering "bench: Q3 step, tap-exact vs cuDNN convolutions" 30 90 "gpu hg data" q3_lowering.log \
    bash -c 'for l in auto library; do echo "== HANDGRAD_CONV_LOWERING=$l"; HANDGRAD_CONV_LOWERING=$l "$1" transfer train \
             --weights none --device cuda --freeze none --batch-size 64 --max-steps 40 --no-eval --no-plot --profile \
             --quiet --out-dir "$2/lowering_$l" || exit 1; done' _ "$HG" "$OUTDIR"

# ----- 6. compute-sanitizer on a few small CUDA tests: it works on some of these machines and
# refuses the device on others (then "did not run", not a failure) -----------------------------
# shellcheck disable=SC2016
SANITIZE='"$@"; rc=$?; [ $rc = 0 ] || [ $rc = 3 ] || { echo "the tool did not run here (rc $rc)"; exit 77; }; exit $rc'
for tool in memcheck racecheck; do
  step sanitizer-$tool "compute-sanitizer $tool" 15 60 "tests sanitizer" "sanitizer_$tool.log" bash -c "$SANITIZE" _ \
      "$SAN" --tool $tool --error-exitcode 3 --target-processes all "$TESTS" --gtest_brief=1 \
      --gtest_filter='CudaKernels.MulContiguousAndUnaligned:CudaKernels.StridedCopyPermutesDiagonalsBroadcasts:MlpCuda.StepKernelsMatchCpuTwins'
done

# ----- 7. Benchmarks next to PyTorch on the same device ----------------------------------------
step bench-einsum "bench: einsum vs torch.einsum" 30 120 "bench torch numpy" compare.log "$PY" bench/compare_pytorch.py \
    --bench "$BENCH" --device $DEV --repeats 1 --min-time 0.1 --json "$OUTDIR/compare_$DEV.json"
step bench-q2 "bench: Q2 MLP vs torch eager" 30 120 "hg torch numpy" compare_mlp.log "$PY" bench/compare_mlp.py \
    --handgrad "$HG" --device $DEV --json "$OUTDIR/compare_mlp_$DEV.json"
finish
exit $fail
