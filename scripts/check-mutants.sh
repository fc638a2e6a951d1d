#!/usr/bin/env bash
# A parity test that cannot fail is a defect: this shows that the tests fail on real bugs. On the
# sanitizer build (scripts/sanitizer-build.sh: built or brought up to date here, a no-op right after
# scripts/test-sanitizers.sh) it applies each patch to that build's copy of the sources, rebuilds
# what changed and expects a failure:
#   - tests/mutants/: the Q3 PyTorch oracle must fail (a BatchNorm backward with a term dropped, a
#     momentum update one step late, a frozen layer that trains);
#   - tests/simt_mutants/: the CUDA gtests, run on the SIMT emulator, must fail (a __syncthreads
#     removed from the GEMM tile, the reduction tree and the fused MLP, a tile bound off by one, a
#     wrong shuffle lane, a shared array one row short, a tap-exact col2im one tap row too wide).
#     Each patch names its gtests ("gtest: ...").
# Each set first runs unmutated (the control), unless scripts/test-sanitizers.sh has just passed on
# these very programs (its stamp holds their checksums): its ctest ran the same oracle and every
# CUDA gtest. A mutant's program runs while the next one builds (the build is one compiler, the run
# mostly one thread: two cores, two jobs). Exit 0 when every mutant is caught.
#   scripts/check-mutants.sh [ORACLE]     (default: tests/oracle_transfer.py; it takes --fail-fast)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
oracle=${1:-tests/oracle_transfer.py}
python=/usr/bin/python3
[ -x "$python" ] || python=python3
source scripts/sanitizer-build.sh
work=$(mktemp -d)
applied=""  # the patch applied to the copy right now
# However it ends, the sanitizer build is left as it was found: no mutant still running, its sources
# unpatched and its programs the unmutated ones (ninja rebuilds the reverted files at its next build).
restore() {
  local pids
  pids=$(jobs -p)
  [ -z "$pids" ] || kill $pids 2>/dev/null || true
  wait 2>/dev/null || true
  [ -z "$applied" ] || (cd "$SAN_SRC" && patch -p1 -R -s <"$repo/$applied")
  [ ! -f "$work/handgrad" ] || cp "$work/handgrad" "$SAN_BUILD/handgrad"
  [ ! -f "$work/handgrad_tests" ] || cp "$work/handgrad_tests" "$SAN_BUILD/tests/handgrad_tests"
  rm -rf "$work"
}
trap restore EXIT
build() { cmake --build "$SAN_BUILD" --target "$1" >/dev/null; }

# apply_mutant PATCH: puts the patch's bug into the copy (fails when it no longer applies).
apply_mutant() {
  if ! (cd "$SAN_SRC" && patch -p1 -s --dry-run <"$repo/$1" >/dev/null); then
    echo "[mutants] $1 no longer applies to the sources: make the same bug again and regenerate it"
    exit 1
  fi
  (cd "$SAN_SRC" && patch -p1 -s <"$repo/$1")
  applied=$1
}
revert_mutant() {
  (cd "$SAN_SRC" && patch -p1 -R -s <"$repo/$applied")
  applied=""
}

# run_oracle PROGRAM [--fail-fast]: prints the first failure (or the last line), returns the oracle's
# exit code.
run_oracle() {
  local program=$1 log rc=0
  shift
  log=$(mktemp -p "$work")
  "$python" "$oracle" "$program" "$@" >"$log" 2>&1 || rc=$?
  { grep -m1 '^FAIL' "$log" || tail -1 "$log"; } | cut -c1-160
  return $rc
}
# run_gtests PROGRAM FILTER: prints the first report or failure, returns the gtests' exit code.
run_gtests() {
  local log rc=0
  log=$(mktemp -p "$work")
  "$1" --gtest_filter="$2" --gtest_fail_fast >"$log" 2>&1 || rc=$?
  { grep -m1 -E '^handgrad simt:|Failure|runtime error|^==[0-9]+==ERROR' "$log" || tail -1 "$log"; } | cut -c1-200
  return $rc
}
gtests_of() { sed -n 's/^gtest: //p' "$@" | tr '\n' ':'; }
oracle_mutant() { run_oracle "$2/handgrad" --fail-fast; }  # PATCH DIR
gtest_mutant() { run_gtests "$2/handgrad_tests" "$(gtests_of "$1")"; }

# Whether scripts/test-sanitizers.sh passed on the programs the build holds now (and on the default
# oracle, the one its ctest runs).
control_done() {
  [ "$oracle" = tests/oracle_transfer.py ] && [ -f "$SAN_BUILD/ctest-passed.sha256" ] &&
    (cd "$SAN_BUILD" && sha256sum --quiet --status -c ctest-passed.sha256)
}

missed=0
skipped=""
# mutate DIR TARGET RUNNER: each patch of DIR is applied, TARGET rebuilt and copied aside, the patch
# reverted; RUNNER PATCH FOLDER runs that copy in the background while the next one builds, and its
# verdict is printed in order. Adds the mutants that survived to $missed.
mutate() {
  local dir=$1 target=$2 runner=$3 patch name prev="" n=0 caught=0
  local patches=("$dir"/*.patch)
  for patch in "${patches[@]}" ""; do
    if [ -n "$patch" ]; then
      name=$(basename "$patch" .patch)
      apply_mutant "$patch"
      build "$target"
      mkdir -p "$work/$name"
      cp "$SAN_BUILD/$target" "$work/$name/"
      revert_mutant
    fi
    if [ -n "$prev" ]; then  # the previous mutant's verdict
      wait "$(cat "$work/$prev.pid")" || true
      local rc out
      rc=$(cat "$work/$prev.rc")
      out=$(cat "$work/$prev.out")
      n=$((n + 1))
      if [ "$rc" = 77 ]; then
        skipped="the oracle skipped ($out)"
      elif [ "$rc" = 0 ]; then
        echo "[mutants] MISSED $prev: its tests passed"
      else
        echo "[mutants] caught $prev: $out"
        caught=$((caught + 1))
      fi
    fi
    [ -n "$patch" ] || break
    (rc=0; "$runner" "$patch" "$work/$name" >"$work/$name.out" 2>&1 || rc=$?; echo "$rc" >"$work/$name.rc") &
    echo $! >"$work/$name.pid"
    prev=$name
  done
  [ -z "$skipped" ] || { echo "[mutants] SKIP: $skipped"; exit 0; }
  echo "[mutants] $caught of $n mutants of $dir caught"
  missed=$((missed + n - caught))
}

simt=0
grep -q '^HANDGRAD_SIMT:BOOL=ON' "$SAN_BUILD/CMakeCache.txt" && simt=1  # CUDA toolkit headers were found
build handgrad
cp "$SAN_BUILD/handgrad" "$work/handgrad"
if [ $simt = 1 ]; then
  build tests/handgrad_tests
  cp "$SAN_BUILD/tests/handgrad_tests" "$work/handgrad_tests"
fi
controlled=0
if control_done; then
  controlled=1
  echo "[mutants] control: scripts/test-sanitizers.sh passed on these very programs (oracle.transfer_vs_torch, simt.kernels)"
else
  echo "[mutants] control: the unmodified sources"
  if ! run_oracle "$SAN_BUILD/handgrad"; then
    echo "[mutants] the oracle fails on the unmodified sources: fix that first"
    exit 1
  fi
fi
mutate tests/mutants handgrad oracle_mutant

# The kernel mutants, where the sanitizer build is a SIMT one.
if [ $simt = 1 ]; then
  if [ $controlled = 0 ]; then
    echo "[mutants] control: the CUDA gtests the kernel mutants name, on the SIMT emulator"
    if ! run_gtests "$SAN_BUILD/tests/handgrad_tests" "$(gtests_of tests/simt_mutants/*.patch)" >/dev/null; then
      echo "[mutants] the CUDA gtests fail on the unmodified sources: fix that first"
      exit 1
    fi
  fi
  mutate tests/simt_mutants tests/handgrad_tests gtest_mutant
else
  echo "[mutants] kernel mutants skipped: the sanitizer build has no SIMT emulator (no CUDA toolkit headers)"
fi
[ "$missed" = 0 ]
