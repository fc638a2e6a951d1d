# Sourced (not run) by scripts/test-sanitizers.sh and scripts/check-mutants.sh, from the repository's
# root: the CPU-only build with AddressSanitizer, UndefinedBehaviorSanitizer and LeakSanitizer, and
# the environment its programs run in. It compiles a copy of the sources (build-asan/src; the tree
# is build-asan/build), so that the mutant check can patch that copy and rebuild one file instead
# of building the whole project a third time. Sets SAN_SRC and SAN_BUILD.
SAN_SRC=build-asan/src
SAN_BUILD=build-asan/build

# The copy follows the repository's files (tracked, and new ones git does not ignore). Only a file
# whose content differs is copied, with a new time: ninja rebuilds what changed and nothing else,
# also after a mutant was put back or a run was cut short with one applied.
mkdir -p "$SAN_SRC"
git ls-files -co --exclude-standard -z >"$SAN_SRC.files"
while IFS= read -r -d '' f; do
  [ -f "$f" ] || continue  # deleted in the work tree, not yet in git
  if ! cmp -s "$f" "$SAN_SRC/$f"; then
    mkdir -p "$SAN_SRC/$(dirname "$f")"
    cp "$f" "$SAN_SRC/$f"
  fi
done <"$SAN_SRC.files"
# Files the repository no longer has go from the copy too.
(cd "$SAN_SRC" && find . -type f -printf '%P\0') | sort -z >"$SAN_SRC.have"
tr '\0' '\n' <"$SAN_SRC.files" | sort | comm -13 - <(tr '\0' '\n' <"$SAN_SRC.have") |
  while IFS= read -r f; do rm -f "$SAN_SRC/$f"; done
rm -f "$SAN_SRC.files" "$SAN_SRC.have"

# -O1 -g1 (line tables: stack traces still name file and line) compiles in less than half the time
# of RelWithDebInfo's -O2 -g (tests/test_cnn.cpp: 8.7 s, not 19.6 s); the code that runs once per
# command (HANDGRAD_SETUP_CODE_FLAGS: the CLI, the report, checkpoints) compiles at -O0.
SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
# The CUDA kernels run here on the SIMT emulator (kernels/simt: HANDGRAD_SIMT, ctest -L simt) where
# the CUDA toolkit's headers are; it needs no GPU and no nvcc run.
SIMT=OFF
if [ -f "${CUDA_HOME:-/usr/local/cuda}/include/cuda_runtime.h" ] || command -v nvcc >/dev/null 2>&1; then
  SIMT=ON
else
  echo "[sanitizers] no CUDA toolkit headers: the SIMT emulator is not built, the CUDA kernels do not run"
fi
cmake -S "$SAN_SRC" -B "$SAN_BUILD" -G Ninja -DHANDGRAD_CUDA=OFF -DHANDGRAD_SIMT=$SIMT -DHANDGRAD_BENCH=OFF -DHANDGRAD_PYTHON=OFF \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo "-DCMAKE_CXX_FLAGS_RELWITHDEBINFO=-O1 -g1 -DNDEBUG" -DHANDGRAD_SETUP_CODE_FLAGS=-O0 \
  "-DCMAKE_CXX_FLAGS=$SAN" "-DCMAKE_EXE_LINKER_FLAGS=$SAN" >/dev/null
cmake --build "$SAN_BUILD" -j "$(nproc)"

# Leaks in the runtime libraries' own thread pools at exit are theirs, not handgrad's.
export LSAN_OPTIONS="suppressions=$(pwd)/tests/lsan.supp:print_suppressions=0"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:detect_stack_use_after_return=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
