#include "kernels/common.cuh"
#include "kernels/nn/xent.h"

namespace handgrad::cuda {

namespace {
// One thread per row (K is 10 here): max, log-sum-exp in double, the gradient, the verdict.
__global__ void softmax_xent_kernel(float* __restrict__ dz, float* __restrict__ row_loss, int32_t* __restrict__ row_correct,
                                    const float* __restrict__ z, const int32_t* __restrict__ labels, int64_t N, int64_t K) {
  for (int64_t n = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; n < N; n += int64_t(gridDim.x) * blockDim.x) {
    const float* row = z + n * K;
    int64_t arg = 0;
    for (int64_t k = 1; k < K; ++k)
      if (row[k] > row[arg]) arg = k;
    const double mx = row[arg];
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += exp(row[k] - mx);
    const double lse = mx + log(sum);
    const int32_t y = labels[n];
    row_loss[n] = static_cast<float>(lse - row[y]);
    row_correct[n] = arg == y;
    if (dz)
      for (int64_t k = 0; k < K; ++k) dz[n * K + k] = static_cast<float>((exp(row[k] - lse) - (k == y ? 1.0 : 0.0)) / N);
  }
}

// One block: each thread sums rows t, t + 256, ... in double, then a tree in shared memory.
constexpr int kSumThreads = 256;
__global__ void __launch_bounds__(kSumThreads)
add_row_sums_kernel(double* sums, const float* __restrict__ row_loss, const int32_t* __restrict__ row_correct, int64_t N) {
  __shared__ double loss[kSumThreads], right[kSumThreads];
  const int t = threadIdx.x;
  double l = 0, r = 0;
  for (int64_t n = t; n < N; n += kSumThreads) l += row_loss[n], r += row_correct[n];
  loss[t] = l;
  right[t] = r;
  __syncthreads();
  for (int s = kSumThreads / 2; s > 0; s /= 2) {
    if (t < s) loss[t] += loss[t + s], right[t] += right[t + s];
    __syncthreads();
  }
  if (t == 0) sums[0] += loss[0], sums[1] += right[0];
}
}  // namespace

void add_row_sums(double* sums, const float* row_loss, const int32_t* row_correct, int64_t N) {
  if (N == 0) return;
  HG_LAUNCH(1, kSumThreads, 0, stream(), add_row_sums_kernel)(sums, row_loss, row_correct, N);
  CUDA_CHECK_LAUNCH();
}

void softmax_xent(float* dz, float* row_loss, int32_t* row_correct, const float* z, const int32_t* labels, int64_t N,
                  int64_t K) {
  if (N == 0) return;
  HG_LAUNCH(grid_for(N), kBlock, 0, stream(), softmax_xent_kernel)(dz, row_loss, row_correct, z, labels, N, K);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
