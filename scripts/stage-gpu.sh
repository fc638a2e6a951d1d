#!/usr/bin/env bash
# Prepares a build for a GPU machine that has CUDA 13, PyTorch and python3, but no apt, no
# network, and none of GoogleTest / Google Benchmark / OpenBLAS (the project's GPU checkers).
# Builds here for sm_90 (H100/H200) with the CUDA runtime and libstdc++ linked statically and
# the built-in CPU GEMM and im2col convolutions (OpenBLAS's 36 MB library and oneDNN's 40 MB stay
# home: there the CPU only checks test-sized inputs), then copies the binaries and the
# few shared libraries they need that such a machine lacks into stage/ (git-ignored):
#   stage/bin/{handgrad,handgrad_tests,bench_einsum}   stage/lib/*.so*   stage/data/fashion-mnist
# cuBLAS and cuDNN are NOT copied: scripts/gpu-check.sh takes them from the GPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
ARCH="${HANDGRAD_GPU_ARCH:-90}"
HANDGRAD_BUILD_DIR=build-gpu scripts/build.sh \
  -DCMAKE_CUDA_ARCHITECTURES="$ARCH" -DHANDGRAD_OPENBLAS=OFF -DHANDGRAD_ONEDNN=OFF -DHANDGRAD_PYTHON=OFF \
  "-DCMAKE_EXE_LINKER_FLAGS=-static-libstdc++ -static-libgcc"
rm -rf stage
mkdir -p stage/bin stage/lib
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
