// BatchNorm on the GPU: one block per channel for the statistics (two passes over the
// channel's N*HW values, accumulated in double, as the CPU twin), then elementwise kernels.
#include "kernels/common.cuh"
#include "kernels/nn/batchnorm.h"

namespace handgrad::cuda {

namespace {

constexpr int kThreads = 256;

// Sum of `v` over the block, in double; every thread gets the result.
__device__ double block_sum(double v) {
  __shared__ double part[kThreads / 32];
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  const int lane = threadIdx.x % 32, warp = threadIdx.x / 32;
  __syncthreads();  // `part` may still be read from a previous call
  if (lane == 0) part[warp] = v;
  __syncthreads();
  double total = 0;
  for (int w = 0; w < kThreads / 32; ++w) total += part[w];
  return total;
}

__global__ void __launch_bounds__(kThreads)
bn_stats_kernel(const float* __restrict__ x, float* running_mean, float* running_var, float* save_mean,
                float* save_invstd, BatchNormShape s) {
  const int64_t c = blockIdx.x, n = s.N * s.HW;
  double sum = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) sum += x[((i / s.HW) * s.C + c) * s.HW + i % s.HW];
  const double mean = block_sum(sum) / n;
  double sq = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const double d = x[((i / s.HW) * s.C + c) * s.HW + i % s.HW] - mean;
    sq += d * d;
  }
  const double var = block_sum(sq) / n;
  if (threadIdx.x == 0) {
    save_mean[c] = static_cast<float>(mean);
    save_invstd[c] = static_cast<float>(1.0 / sqrt(var + s.eps));
    running_mean[c] = (1 - s.momentum) * running_mean[c] + s.momentum * static_cast<float>(mean);
    const double unbiased = n > 1 ? var * n / (n - 1) : var;
    running_var[c] = (1 - s.momentum) * running_var[c] + s.momentum * static_cast<float>(unbiased);
  }
}

// y = (x - mean) * gamma * invstd + beta, with per-channel mean and invstd.
__global__ void bn_apply_kernel(float* __restrict__ y, const float* __restrict__ x, const float* gamma,
                                const float* beta, const float* mean, const float* invstd, BatchNormShape s,
                                bool from_running_var) {
  const int64_t total = s.N * s.C * s.HW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / s.HW) % s.C;
    const float is = from_running_var ? 1.f / sqrtf(invstd[c] + s.eps) : invstd[c];
    y[i] = (x[i] - mean[c]) * (gamma[c] * is) + beta[c];
  }
}

__global__ void __launch_bounds__(kThreads)
bn_backward_reduce_kernel(float* stats, float* dgamma, float* dbeta, const float* __restrict__ dy,
                          const float* __restrict__ x, const float* save_mean, const float* save_invstd,
                          BatchNormShape s) {
  const int64_t c = blockIdx.x, n = s.N * s.HW;
  const float m = save_mean[c], is = save_invstd[c];
  double sdy = 0, sdyx = 0;
  for (int64_t i = threadIdx.x; i < n; i += kThreads) {
    const int64_t at = ((i / s.HW) * s.C + c) * s.HW + i % s.HW;
    sdy += dy[at];
    sdyx += dy[at] * ((x[at] - m) * is);
  }
  sdy = block_sum(sdy);
  sdyx = block_sum(sdyx);
  if (threadIdx.x == 0) {
    stats[c] = static_cast<float>(sdy);
    stats[s.C + c] = static_cast<float>(sdyx);
    if (dgamma) dgamma[c] = static_cast<float>(sdyx);
    if (dbeta) dbeta[c] = static_cast<float>(sdy);
  }
}

__global__ void bn_backward_apply_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                         const float* __restrict__ x, const float* gamma, const float* save_mean,
                                         const float* save_invstd, const float* stats, BatchNormShape s) {
  const int64_t total = s.N * s.C * s.HW;
  const float n = static_cast<float>(s.N * s.HW);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = (i / s.HW) % s.C;
    const float is = save_invstd[c];
    dx[i] = gamma[c] * is / n * (n * dy[i] - stats[c] - (x[i] - save_mean[c]) * is * stats[s.C + c]);
  }
}

}  // namespace

void batchnorm_forward_train(float* y, const float* x, const float* gamma, const float* beta,
                             float* running_mean, float* running_var, float* save_mean,
                             float* save_invstd, const BatchNormShape& s) {
  bn_stats_kernel<<<static_cast<unsigned>(s.C), kThreads, 0, stream()>>>(x, running_mean, running_var, save_mean,
                                                                        save_invstd, s);
  CUDA_CHECK_LAUNCH();
  bn_apply_kernel<<<grid_for(s.N * s.C * s.HW), kBlock, 0, stream()>>>(y, x, gamma, beta, save_mean, save_invstd, s,
                                                                       false);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_forward_eval(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, const BatchNormShape& s) {
  bn_apply_kernel<<<grid_for(s.N * s.C * s.HW), kBlock, 0, stream()>>>(y, x, gamma, beta, running_mean, running_var,
                                                                       s, true);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        const BatchNormShape& s, float* stats) {
  bn_backward_reduce_kernel<<<static_cast<unsigned>(s.C), kThreads, 0, stream()>>>(stats, dgamma, dbeta, dy, x,
                                                                                  save_mean, save_invstd, s);
  CUDA_CHECK_LAUNCH();
  bn_backward_apply_kernel<<<grid_for(s.N * s.C * s.HW), kBlock, 0, stream()>>>(dx, dy, x, gamma, save_mean,
                                                                                save_invstd, stats, s);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
