#!/usr/bin/env bash
# Fuzzes handgrad's parsers and its contraction planner with libFuzzer (clang, AddressSanitizer +
# UBSan): builds the targets of tests/fuzz/ into build-fuzz/, seeds each with
# tests/fuzz/make_corpus.py, and runs each for SECONDS (default 600). A finding leaves crash-*
# files in build-fuzz/findings/<target>/: add such a file to make_corpus.py as a reproducer once
# it is fixed.
#   scripts/fuzz.sh [SECONDS] [TARGET ...]      targets: npy idx zip pickle safetensors einsum expr order flags
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-600}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(npy idx zip pickle safetensors einsum expr order flags)
command -v clang++ >/dev/null || { echo "fuzz: clang++ is needed (apt-get install clang libclang-rt-14-dev)"; exit 2; }
SAN="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
CC=clang CXX=clang++ cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DHANDGRAD_FUZZ=ON -DHANDGRAD_PYTHON=OFF \
  -DHANDGRAD_TESTS=OFF -DHANDGRAD_BENCH=OFF -DHANDGRAD_CUDA=OFF -DHANDGRAD_OPENBLAS=OFF "-DCMAKE_CXX_FLAGS=$SAN" >/dev/null
cmake --build build-fuzz -j "$(nproc)" --target $(printf 'fuzz_%s ' "${TARGETS[@]}")
python3 tests/fuzz/make_corpus.py build-fuzz/seeds >/dev/null
# Inputs are written to files: on tmpfs the fsync of every write costs nothing.
export TMPDIR=$( [ -d /dev/shm ] && echo /dev/shm || echo /tmp )
for t in "${TARGETS[@]}"; do
  mkdir -p "build-fuzz/corpus/$t" "build-fuzz/findings/$t"
  log="build-fuzz/findings/$t/log.txt"
  rc=0
  build-fuzz/tests/fuzz/fuzz_$t -max_total_time="$SECONDS_EACH" -rss_limit_mb=4096 -timeout=10 \
    -artifact_prefix="build-fuzz/findings/$t/" "build-fuzz/corpus/$t" "build-fuzz/seeds/$t" >"$log" 2>&1 || rc=$?
  summary=$(grep -E "^#[0-9]+.*(DONE|pulse|NEW|REDUCE)" "$log" | tail -1)
  echo "[fuzz] $t: rc=$rc ${summary}"
  [ $rc = 0 ] || { grep -E "ERROR|SUMMARY|Test unit written" "$log" | head -5; }
done
