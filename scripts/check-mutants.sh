#!/usr/bin/env bash
# A parity test that cannot fail is a defect: this shows that the Q3 PyTorch oracle fails on
# real bugs. It builds a CPU-only handgrad from a copy of the sources, checks that the oracle
# passes on it, then applies each patch in tests/mutants/ (one bug each: a BatchNorm backward
# with a term dropped, a momentum update one step late, a frozen layer that trains), rebuilds
# and expects the oracle to fail. Exit 0 when every mutant is caught.
#   scripts/check-mutants.sh [ORACLE]     (default: tests/oracle_transfer.py)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
oracle=${1:-tests/oracle_transfer.py}
python=/usr/bin/python3
[ -x "$python" ] || python=python3
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

git ls-files -co --exclude-standard -z | (cd "$repo" && xargs -0 cp --parents -t "$work")
# -O1: the oracle's handgrad runs are a few small steps, and -O1 builds in three quarters of -O3's time.
cmake -S "$work" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release "-DCMAKE_CXX_FLAGS_RELEASE=-O1 -DNDEBUG" \
      -DHANDGRAD_CUDA=OFF -DHANDGRAD_TESTS=OFF -DHANDGRAD_BENCH=OFF -DHANDGRAD_PYTHON=OFF >/dev/null 2>&1
build() { cmake --build "$work/build" --target handgrad >/dev/null; }

run_oracle() {  # prints the first failure (or the last line), returns the oracle's exit code
  local log="$work/oracle.log" rc=0
  "$python" "$oracle" "$work/build/handgrad" >"$log" 2>&1 || rc=$?
  { grep -m1 '^FAIL' "$log" || tail -1 "$log"; } | cut -c1-160
  return $rc
}

echo "[mutants] control: the unmodified sources"
build
if ! run_oracle; then
  echo "[mutants] the oracle fails on the unmodified sources: fix that first"
  exit 1
fi
missed=0
for patch in tests/mutants/*.patch; do
  name=$(basename "$patch" .patch)
  if ! (cd "$work" && patch -p1 -s --dry-run <"$repo/$patch" >/dev/null); then
    echo "[mutants] $patch no longer applies to the sources: make the same bug again and regenerate it (git diff)"
    exit 1
  fi
  (cd "$work" && patch -p1 -s <"$repo/$patch")
  build
  rc=0
  out=$(run_oracle) || rc=$?
  if [ "$rc" = 77 ]; then
    echo "[mutants] SKIP: the oracle skipped ($out)"
    exit 0
  elif [ "$rc" = 0 ]; then
    echo "[mutants] MISSED $name: the oracle passed"
    missed=$((missed + 1))
  else
    echo "[mutants] caught $name: $out"
  fi
  (cd "$work" && patch -p1 -R -s <"$repo/$patch")
done
n=$(ls tests/mutants/*.patch | wc -l)
echo "[mutants] $((n - missed)) of $n mutants caught"
[ "$missed" = 0 ]
