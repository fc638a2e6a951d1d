// Launch helpers shared by the CUDA kernels: grid math lives here, in one place.
#pragma once
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <utility>

#include "kernels/common.h"
#include "kernels/cuda_check.h"

// Every kernel launch: HG_LAUNCH(grid, block, dynamic_smem, stream, kernel)(args...). Under nvcc it is
// kernel<<<grid, block, dynamic_smem, stream>>>(args...); in a SIMT build (the same .cu compiled as
// C++, kernels/simt/simt.h) it runs the kernel on the emulator. The kernel comes last because a
// template kernel's arguments hold commas.
#ifdef HANDGRAD_SIMT
#define HG_LAUNCH(grid, block, smem, stream, ...) \
  ::handgrad::simt::launcher<__VA_ARGS__>(grid, block, smem, stream, HG_SIMT_SITE)
#else
#define HG_LAUNCH(grid, block, smem, stream, ...) __VA_ARGS__<<<grid, block, smem, stream>>>
#endif

// A kernel's dynamic shared memory (the launch's smem bytes), as `type* name`.
#ifdef HANDGRAD_SIMT
#define HG_EXTERN_SHARED(type, name) type* const name = static_cast<type*>(::handgrad::simt::dynamic_shared())
#else
#define HG_EXTERN_SHARED(type, name) extern __shared__ type name[]
#endif

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
