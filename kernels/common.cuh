// Launch helpers shared by the CUDA kernels: grid math lives here, in one place.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "host/cuda_check.h"

namespace handgrad::cuda {

constexpr int kBlock = 256;

// Blocks for a grid-stride loop over n items: enough to fill the GPU, never more than needed.
inline unsigned grid_for(int64_t n, int block = kBlock, int64_t max_blocks = 65536L * 8) {
  int64_t blocks = (n + block - 1) / block;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min(blocks, max_blocks)));
}

// True when p allows 16-byte (float4) loads and stores.
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

// Streaming multiprocessors of the current device (cached per process).
int sm_count();

// The process's cuBLAS handle (created on first use, bound to stream()).
cublasHandle_t cublas_handle();

// The stream every handgrad launch goes to: the legacy default stream, unless a StreamScope
// redirects launches (CUDA graph capture needs a stream of its own).
cudaStream_t stream();

class StreamScope {
 public:
  explicit StreamScope(cudaStream_t s);
  ~StreamScope();
  StreamScope(const StreamScope&) = delete;
  StreamScope& operator=(const StreamScope&) = delete;

 private:
  cudaStream_t previous_;
};

}  // namespace handgrad::cuda
