// Launch helpers shared by the CUDA kernels: grid math lives here, in one place.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "kernels/cuda_check.h"

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

// Device memory a kernel family keeps in its own context (cuDNN's workspace): move-only, freed
// with its owner. Tensors and the model's buffers come from the runtime's allocator (host/).
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t bytes) : bytes_(bytes) {
    if (bytes) CUDA_CHECK(cudaMalloc(&ptr_, bytes));
  }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);  // never throws: a destructor
  }
  DeviceBuffer(DeviceBuffer&& o) noexcept : ptr_(std::exchange(o.ptr_, nullptr)), bytes_(std::exchange(o.bytes_, 0)) {}
  DeviceBuffer& operator=(DeviceBuffer&& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    return *this;
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }

 private:
  void* ptr_ = nullptr;
  size_t bytes_ = 0;
};

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
