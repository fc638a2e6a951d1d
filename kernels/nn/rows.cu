#include "kernels/common.cuh"
#include "kernels/nn/rows.h"

namespace handgrad::cuda {

namespace {
__global__ void add_row_bias_kernel(float* __restrict__ y, const float* __restrict__ b, int64_t N, int64_t K) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * K; i += int64_t(gridDim.x) * blockDim.x)
    y[i] += b[i % K];
}
__global__ void gather_pixels_kernel(float* __restrict__ dst, const uint8_t* __restrict__ src,
                                     const int64_t* __restrict__ idx, int64_t rows, int64_t len, PixelScale s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows * len; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / len;
    dst[i] = pixel_value(src[(idx ? idx[r] : r) * len + i % len], s);
  }
}
__global__ void gather_i32_kernel(int32_t* __restrict__ dst, const int32_t* __restrict__ src,
                                  const int64_t* __restrict__ idx, int64_t rows) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < rows; i += int64_t(gridDim.x) * blockDim.x)
    dst[i] = src[idx[i]];
}
}  // namespace

void add_row_bias(float* y, const float* b, int64_t N, int64_t K) {
  if (N * K == 0) return;
  HG_LAUNCH(grid_for(N * K), kBlock, 0, stream(), add_row_bias_kernel)(y, b, N, K);
  CUDA_CHECK_LAUNCH();
}

void gather_pixels(float* dst, const uint8_t* src, const int64_t* idx, int64_t rows, int64_t len, PixelScale s) {
  if (rows * len == 0) return;
  HG_LAUNCH(grid_for(rows * len), kBlock, 0, stream(), gather_pixels_kernel)(dst, src, idx, rows, len, s);
  CUDA_CHECK_LAUNCH();
}

void gather_i32(int32_t* dst, const int32_t* src, const int64_t* idx, int64_t rows) {
  if (rows == 0) return;
  HG_LAUNCH(grid_for(rows), kBlock, 0, stream(), gather_i32_kernel)(dst, src, idx, rows);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
