#include "kernels/common.cuh"
#include "kernels/nn/linear_row.h"

namespace handgrad::cuda {

namespace {

// One thread per output n of one model (blockIdx.y): a dot product down column n of W, whose
// reads are coalesced across the threads of a warp; x[k] is the same for all (broadcast).
__global__ void linear_row_forward_kernel(float* __restrict__ y, RowSource x, const float* __restrict__ W,
                                          LinearRowShape s) {
  const int64_t m = blockIdx.y;
  const int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (n >= s.N) return;
  const float* xm = x.row(m);
  const float* Wm = W + m * s.w_stride;
  float acc = 0.f;
  for (int64_t k = 0; k < s.K; ++k) acc = fmaf(xm[k], Wm[k * s.N + n], acc);
  y[m * s.N + n] = acc;
}

__global__ void linear_row_backward_weight_kernel(float* __restrict__ dW, RowSource x,
                                                  const float* __restrict__ dy, LinearRowShape s) {
  const int64_t m = blockIdx.y;
  const float* xm = x.row(m);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < s.K * s.N;
       i += int64_t(gridDim.x) * blockDim.x)
    dW[m * s.w_stride + i] = xm[i / s.N] * dy[m * s.N + i % s.N];
}

// One thread per input k: a dot product along row k of W (contiguous for each thread).
__global__ void linear_row_backward_input_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                                 const float* __restrict__ W, LinearRowShape s) {
  const int64_t m = blockIdx.y;
  const int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (k >= s.K) return;
  const float* wk = W + m * s.w_stride + k * s.N;
  const float* dym = dy + m * s.N;
  float acc = 0.f;
  for (int64_t n = 0; n < s.N; ++n) acc = fmaf(dym[n], wk[n], acc);
  dx[m * s.K + k] = acc;
}

dim3 grid2(int64_t n, int64_t models) {
  HG_ASSERT(models <= kMaxGridYZ, "too many models for one launch (gridDim.y)");
  return dim3(grid_for(n), static_cast<unsigned>(models));
}

}  // namespace

void linear_row_forward(float* y, RowSource x, const float* W, const LinearRowShape& s) {
  if (s.N == 0 || s.models == 0) return;
  HG_LAUNCH(grid2(s.N, s.models), kBlock, 0, stream(), linear_row_forward_kernel)(y, x, W, s);
  CUDA_CHECK_LAUNCH();
}

void linear_row_backward_weight(float* dW, RowSource x, const float* dy, const LinearRowShape& s) {
  if (s.N * s.K == 0 || s.models == 0) return;
  HG_LAUNCH(grid2(s.K * s.N, s.models), kBlock, 0, stream(), linear_row_backward_weight_kernel)(dW, x, dy, s);
  CUDA_CHECK_LAUNCH();
}

void linear_row_backward_input(float* dx, const float* dy, const float* W, const LinearRowShape& s) {
  if (s.K == 0 || s.models == 0) return;
  HG_LAUNCH(grid2(s.K, s.models), kBlock, 0, stream(), linear_row_backward_input_kernel)(dx, dy, W, s);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
