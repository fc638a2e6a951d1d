#!/usr/bin/env bash
# Prepares a build for a GPU machine that has CUDA 13, PyTorch and python3, but no apt, no
# network, and none of GoogleTest / Google Benchmark / OpenBLAS (the project's GPU checkers).
# Builds here for sm_90 (H100/H200) with the CUDA runtime and libstdc++ linked statically and
# the built-in CPU GEMM and im2col convolutions (OpenBLAS's 36 MB library and oneDNN's 40 MB stay
# home: there the CPU only checks test-sized inputs), then copies the binaries and the
# few shared libraries they need that such a machine lacks into stage/ (git-ignored):
#   stage/bin/{handgrad,handgrad_tests,bench_einsum}   stage/lib/*.so*   stage/data/fashion-mnist
#   stage/python/: the core library (position-independent), cudart_static, module.cpp's compile
#   flags and link libraries, and stage/include/dlpack: scripts/build-python-module.sh compiles
#   the Python module there, for that machine's Python (3.12; this one has 3.11)
# cuBLAS and cuDNN are NOT copied: scripts/gpu-check.sh takes them from the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH="${HANDGRAD_GPU_ARCH:-90}"
# With the Python module (for this machine's Python): that makes the core position-independent
# and gives module.cpp's exact compile command, which the GPU machine reuses with its own Python.
HANDGRAD_BUILD_DIR=build-gpu scripts/build.sh \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DHANDGRAD_OPENBLAS=OFF -DHANDGRAD_ONEDNN=OFF -DHANDGRAD_PYTHON=ON \
  -DCMAKE_EXPORT_COMPILE_COMMANDS=ON "-DCMAKE_EXE_LINKER_FLAGS=-static-libstdc++ -static-libgcc"
rm -rf stage
mkdir -p stage/bin stage/lib stage/python stage/include/dlpack
BINS=(build-gpu/handgrad build-gpu/tests/handgrad_tests build-gpu/bench/bench_einsum)
cp "${BINS[@]}" stage/bin/
# Shared libraries to carry: what the binaries themselves need (readelf NEEDED, not ldd's
# transitive list, which drags in what this machine's cuDNN needs) except glibc's own, NVIDIA's
# (the GPU machine has its own) and libstdc++/libgcc_s (every machine has them, and a newer one
# there must win: its cuDNN may need it; handgrad links libstdc++ statically).
for b in "${BINS[@]}"; do
  readelf -d "$b" | awk '/NEEDED/ {gsub(/[][]/, "", $5); print $5}'
done | sort -u | while read -r name; do
  case "$name" in
    libc.so*|libm.so*|libdl.so*|libpthread.so*|librt.so*|ld-linux*|libcuda.so*|libcublas*|libcudnn*|libnvidia*|libstdc++*|libgcc_s*) ;;
    *) lib=$(ldd "${BINS[0]}" "${BINS[@]}" 2>/dev/null | awk -v n="$name" '$1 == n && $3 ~ /^\// {print $3; exit}')
       if [ -n "$lib" ]; then cp -L "$lib" stage/lib/; else echo "[stage] warning: $name not found here"; fi ;;
  esac
done
# The Python module's ingredients (scripts/build-python-module.sh puts them together there).
if grep -q '^HANDGRAD_HAVE_PYTHON:INTERNAL=ON' build-gpu/CMakeCache.txt 2>/dev/null ||
   [ -n "$(ls build-gpu/python/handgrad/_core*.so 2>/dev/null)" ]; then
  cp build-gpu/libhandgrad_core.a stage/python/
  cuda_lib=$(sed -n 's/^CUDAToolkit_LIBRARY_DIR:PATH=//p' build-gpu/CMakeCache.txt)
  cp "${cuda_lib:-/usr/local/cuda/lib64}/libcudart_static.a" stage/python/
  dlpack=$(sed -n 's/^DLPACK_INCLUDE_DIR:PATH=//p' build-gpu/CMakeCache.txt)
  cp "${dlpack:-/usr/include}/dlpack/dlpack.h" stage/include/dlpack/
  # module.cpp's flags: its definitions, language and optimisation options, without this
  # machine's Python and pybind11 include folders, one per line; this repository's path becomes @ROOT@.
  python3 - "$(pwd)" > stage/python/module.flags <<'PYEOF'
import json, shlex, sys
root = sys.argv[1]
entry = next(e for e in json.load(open("build-gpu/compile_commands.json")) if e["file"].endswith("python/module.cpp"))
args = shlex.split(entry["command"])[1:]
out, skip = [], False
for i, a in enumerate(args):
    if skip:
        skip = False
        continue
    if a in ("-o", "-c", "-MF", "-MT", "-isystem", "-I"):
        nxt = args[i + 1]
        skip = True
        if a in ("-isystem", "-I") and not any(k in nxt for k in ("python", "pybind11")) and nxt != "/usr/include":
            out += [a, nxt.replace(root, "@ROOT@")]
        continue
    if a in ("-MD", "-fno-fat-lto-objects") or a.startswith("-flto") or \
            a.startswith(("-I", "-isystem")) and any(k in a for k in ("python", "pybind11")):
        continue  # (pybind11's LTO: IR objects tie the link to this GCC; that machine's may differ)
    out.append(a.replace(root, "@ROOT@"))
print("\n".join(out))  # one argument per line, unquoted
PYEOF
  # What the core needs at link time: OpenMP, zlib (the staged soname), the CUDA runtime, dl, rt.
  printf '%s\n' @ROOT@/stage/python/libcudart_static.a -fopenmp @ROOT@/stage/lib/libz.so.1 -ldl -lpthread -lrt \
    > stage/python/link.libs
else
  echo "[stage] warning: no Python module in build-gpu (pybind11, python3-dev, libdlpack-dev): the GPU check cannot build one"
fi
# FashionMNIST (30 MB of .gz) for the Q3 checks: the GPU machine has no copy and no network.
for d in "${HANDGRAD_DATA:-}" /usr/share/datasets/fashion-mnist data/fashion-mnist; do
  if [ -n "$d" ] && [ -f "$d/t10k-labels-idx1-ubyte.gz" ]; then
    mkdir -p stage/data/fashion-mnist
    cp "$d"/*-ubyte.gz stage/data/fashion-mnist/
    break
  fi
done
git rev-parse --short=12 HEAD > stage/COMMIT
echo "[stage] sm_$ARCH build staged in stage/ ($(du -sh stage | cut -f1)), commit $(cat stage/COMMIT):"
ls -la stage/bin stage/lib
