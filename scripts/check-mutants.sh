#!/usr/bin/env bash
# A parity test that cannot fail is a defect: this shows that the Q3 PyTorch oracle fails on
# real bugs. On the sanitizer build (scripts/sanitizer-build.sh: built or brought up to date here,
# a no-op right after scripts/test-sanitizers.sh) it checks that the oracle passes, then applies
# each patch in tests/mutants/ (one bug each: a BatchNorm backward with a term dropped, a momentum
# update one step late, a frozen layer that trains) to that build's copy of the sources, rebuilds
# and expects the oracle to fail. Exit 0 when every mutant is caught.
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
  rm -rf "$work"
}
trap restore EXIT
build() { cmake --build "$SAN_BUILD" --target handgrad >/dev/null; }

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
  if ! (cd "$SAN_SRC" && patch -p1 -s --dry-run <"$repo/$patch" >/dev/null); then
    echo "[mutants] $patch no longer applies to the sources: make the same bug again and regenerate it (git diff)"
    exit 1
  fi
  (cd "$SAN_SRC" && patch -p1 -s <"$repo/$patch")
  applied=$patch
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
  (cd "$SAN_SRC" && patch -p1 -R -s <"$repo/$patch")
  applied=""
done
n=$(ls tests/mutants/*.patch | wc -l)
echo "[mutants] $((n - missed)) of $n mutants caught"
[ "$missed" = 0 ]
