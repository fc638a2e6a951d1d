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
  HG_LAUNCH(grid_for(n), kBlock, 0, stream(), relu_forward_kernel)(y, x, n);
  CUDA_CHECK_LAUNCH();
}

void relu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  if (n == 0) return;
  HG_LAUNCH(grid_for(n), kBlock, 0, stream(), relu_backward_kernel)(dx, dy, x, n);
  CUDA_CHECK_LAUNCH();
}

namespace {
__global__ void add_relu_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                         const float* __restrict__ y, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] += !y || y[i] > 0.f ? dy[i] : 0.f;
}
}  // namespace

// The residual join's backward (relu.h): dx += dy * [y > 0] (or dx += dy when y is null).
void add_relu_backward(float* dx, const float* dy, const float* y, int64_t n) {
  if (n == 0) return;
  HG_LAUNCH(grid_for(n), kBlock, 0, stream(), add_relu_backward_kernel)(dx, dy, y, n);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
