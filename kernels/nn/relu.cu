#include "kernels/common.cuh"
#include "kernels/nn/relu.h"

namespace handgrad::cuda {

namespace {
__global__ void relu_forward_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    y[i] = fmaxf(x[i], 0.f);
}
__global__ void relu_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                     const float* __restrict__ x, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = x[i] >= 0.f ? dy[i] : 0.f;
}
}  // namespace

void relu_forward(float* y, const float* x, int64_t n) {
  if (n == 0) return;
  relu_forward_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, x, n);
  CUDA_CHECK_LAUNCH();
}

void relu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  if (n == 0) return;
  relu_backward_kernel<<<grid_for(n), kBlock, 0, stream()>>>(dx, dy, x, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda

namespace handgrad::cuda {

namespace {
__global__ void relu_backward_from_output_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                                 const float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = y[i] > 0.f ? dy[i] : 0.f;
}
__global__ void add_relu_kernel(float* __restrict__ y, const float* __restrict__ a, const float* __restrict__ b,
                                int64_t n, bool relu) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float v = a[i] + b[i];
    y[i] = relu ? fmaxf(v, 0.f) : v;
  }
}
}  // namespace

void relu_backward_from_output(float* dx, const float* dy, const float* y, int64_t n) {
  if (n == 0) return;
  relu_backward_from_output_kernel<<<grid_for(n), kBlock, 0, stream()>>>(dx, dy, y, n);
  CUDA_CHECK_LAUNCH();
}

void add_relu(float* y, const float* a, const float* b, int64_t n) {
  if (n == 0) return;
  add_relu_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, a, b, n, true);
  CUDA_CHECK_LAUNCH();
}

void add(float* y, const float* a, const float* b, int64_t n) {
  if (n == 0) return;
  add_relu_kernel<<<grid_for(n), kBlock, 0, stream()>>>(y, a, b, n, false);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
