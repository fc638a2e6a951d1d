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
# Each set first runs unmutated (the control). Exit 0 when every mutant is caught.
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
# However it ends, the sanitizer build is left as it was found: its sources unpatched and its
# handgrad the unmutated one (ninja rebuilds the reverted files at its next build).
restore() {
  [ -z "$applied" ] || (cd "$SAN_SRC" && patch -p1 -R -s <"$repo/$applied")
  [ ! -f "$work/handgrad" ] || cp "$work/handgrad" "$SAN_BUILD/handgrad"
  [ ! -f "$work/handgrad_tests" ] || cp "$work/handgrad_tests" "$SAN_BUILD/tests/handgrad_tests"
  rm -rf "$work"
}
trap restore EXIT
build() { cmake --build "$SAN_BUILD" --target "${1:-handgrad}" >/dev/null; }

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

run_oracle() {  # [--fail-fast]: prints the first failure (or the last line), returns the oracle's exit code
  local log="$work/oracle.log" rc=0
  "$python" "$oracle" "$SAN_BUILD/handgrad" "$@" >"$log" 2>&1 || rc=$?
  { grep -m1 '^FAIL' "$log" || tail -1 "$log"; } | cut -c1-160
  return $rc
}

echo "[mutants] control: the unmodified sources"
build
cp "$SAN_BUILD/handgrad" "$work/handgrad"
if ! run_oracle; then
  echo "[mutants] the oracle fails on the unmodified sources: fix that first"
  exit 1
fi
missed=0
for patch in tests/mutants/*.patch; do
  name=$(basename "$patch" .patch)
  apply_mutant "$patch"
  build
  rc=0
  out=$(run_oracle --fail-fast) || rc=$?  # caught at its first failing part
  if [ "$rc" = 77 ]; then
    echo "[mutants] SKIP: the oracle skipped ($out)"
    exit 0
  elif [ "$rc" = 0 ]; then
    echo "[mutants] MISSED $name: the oracle passed"
    missed=$((missed + 1))
  else
    echo "[mutants] caught $name: $out"
  fi
  revert_mutant
done
n=$(ls tests/mutants/*.patch | wc -l)
echo "[mutants] $((n - missed)) of $n oracle mutants caught"

# The kernel mutants, where the sanitizer build is a SIMT one (a CUDA toolkit's headers were found).
kernel_missed=0
if grep -q '^HANDGRAD_SIMT:BOOL=ON' "$SAN_BUILD/CMakeCache.txt"; then
  run_gtests() {  # FILTER: prints the first report or failure, returns the gtests' exit code
    local log="$work/gtests.log" rc=0
    "$SAN_BUILD/tests/handgrad_tests" --gtest_filter="$1" --gtest_fail_fast >"$log" 2>&1 || rc=$?
    { grep -m1 -E '^handgrad simt:|Failure|runtime error|^==[0-9]+==ERROR' "$log" || tail -1 "$log"; } | cut -c1-200
    return $rc
  }
  filters=$(sed -n 's/^gtest: //p' tests/simt_mutants/*.patch | tr '\n' ':')
  echo "[mutants] control: the CUDA gtests the kernel mutants name, on the SIMT emulator"
  build tests/handgrad_tests
  cp "$SAN_BUILD/tests/handgrad_tests" "$work/handgrad_tests"
  if ! run_gtests "$filters" >/dev/null; then
    echo "[mutants] the CUDA gtests fail on the unmodified sources: fix that first"
    exit 1
  fi
  for patch in tests/simt_mutants/*.patch; do
    name=$(basename "$patch" .patch)
    apply_mutant "$patch"
    build tests/handgrad_tests
    rc=0
    out=$(run_gtests "$(sed -n 's/^gtest: //p' "$patch")") || rc=$?
    if [ "$rc" = 0 ]; then
      echo "[mutants] MISSED $name: its gtests passed on the emulator"
      kernel_missed=$((kernel_missed + 1))
    else
      echo "[mutants] caught $name: $out"
    fi
    revert_mutant
  done
  n=$(ls tests/simt_mutants/*.patch | wc -l)
  echo "[mutants] $((n - kernel_missed)) of $n kernel mutants caught"
else
  echo "[mutants] kernel mutants skipped: the sanitizer build has no SIMT emulator (no CUDA toolkit headers)"
fi
[ "$missed" = 0 ] && [ "$kernel_missed" = 0 ]
