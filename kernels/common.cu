#include "kernels/common.cuh"

namespace handgrad::cuda {

namespace {
cudaStream_t g_stream = 0;  // handgrad drives the GPU from one host thread
}  // namespace

cudaStream_t stream() { return g_stream; }
StreamScope::StreamScope(cudaStream_t s) : previous_(g_stream) { g_stream = s; }
StreamScope::~StreamScope() { g_stream = previous_; }

int sm_count() {
  static const int count = [] {
    int dev = 0, n = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev));
    return n;
  }();
  return count;
}

cublasHandle_t cublas_handle() {
  // Created once and kept for the life of the process (destroying it at exit races the
  // driver's own teardown).
  static const cublasHandle_t handle = [] {
    cublasHandle_t h = nullptr;
    CUBLAS_CHECK(cublasCreate(&h));
    return h;
  }();
  return handle;
}

}  // namespace handgrad::cuda
