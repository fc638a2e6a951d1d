// BatchNorm on the GPU. Statistics: each channel's N*HW values are cut into `splits` chunks so
// that the grid fills the GPU (ResNet18's 64-channel layers would otherwise run 64 blocks on
// 132 SMs); each block sums its chunk in double, a second kernel combines a channel's chunks in
// a fixed order (deterministic) and finishes the statistics. The forward sums are shifted by
// the channel's first value, so the variance loses nothing to cancellation in one pass. The
// elementwise kernels find the channel with 32-bit divisions (a 64-bit one per element costs
// ~3x as many instructions).
#include "kernels/common.cuh"
#include "kernels/nn/batchnorm.h"

namespace handgrad::cuda {

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMinPerSplit = 8192;  // values per chunk: smaller chunks cost more than they spread

struct Split {
  int64_t splits = 1, per_split = 1;
};

Split split_for(const BatchNormShape& s) {
  const int64_t n = s.N * s.HW;
  const int64_t want = (2 * int64_t(sm_count()) + s.C - 1) / s.C;  // ~2 blocks per SM over all channels
  Split p;
  p.splits = std::max<int64_t>(1, std::min(want, n / kMinPerSplit));
  p.per_split = (n + p.splits - 1) / p.splits;
  return p;
}

// The workspace: [2 * C floats: sum dy, sum dy * xhat][2 * C * splits doubles: chunk sums].
double* chunk_sums(float* workspace, const BatchNormShape& s) {
  return reinterpret_cast<double*>(workspace + ((2 * s.C + 1) & ~int64_t(1)));
}

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

// Offset of value i (< N*HW, so 32 bits) of channel c in NCHW.
__device__ __forceinline__ int64_t at(uint32_t i, int64_t c, const BatchNormShape& s) {
  const uint32_t b = i / uint32_t(s.HW);
  return (int64_t(b) * s.C + c) * s.HW + (i - b * uint32_t(s.HW));
}

// Grid (C, splits): sums of (x - shift) and (x - shift)^2 over chunk blockIdx.y of channel blockIdx.x.
__global__ void __launch_bounds__(kThreads)
bn_stats_partial_kernel(double* chunk, const float* __restrict__ x, BatchNormShape s, int64_t per_split) {
  const int64_t c = blockIdx.x, n = s.N * s.HW;
  const int64_t lo = blockIdx.y * per_split, hi = min(n, lo + per_split);
  const double shift = x[c * s.HW];
  double s1 = 0, s2 = 0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const double d = double(x[at(uint32_t(i), c, s)]) - shift;
    s1 += d;
    s2 += d * d;
  }
  s1 = block_sum(s1);
  s2 = block_sum(s2);
  if (threadIdx.x == 0) {
    chunk[(c * gridDim.y + blockIdx.y) * 2] = s1;
    chunk[(c * gridDim.y + blockIdx.y) * 2 + 1] = s2;
  }
}

// One thread per channel: combine the chunks in order, finish the statistics.
__global__ void bn_stats_finish_kernel(const double* chunk, int64_t splits, const float* __restrict__ x,
                                       float* running_mean, float* running_var, float* save_mean, float* save_invstd,
                                       BatchNormShape s) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= s.C) return;
  const int64_t n = s.N * s.HW;
  double s1 = 0, s2 = 0;
  for (int64_t k = 0; k < splits; ++k) s1 += chunk[(c * splits + k) * 2], s2 += chunk[(c * splits + k) * 2 + 1];
  const double d = s1 / n;  // mean - shift
  const double mean = double(x[c * s.HW]) + d;
  const double var = max(0.0, s2 / n - d * d);
  save_mean[c] = static_cast<float>(mean);
  save_invstd[c] = static_cast<float>(1.0 / sqrt(var + s.eps));
  running_mean[c] = (1 - s.momentum) * running_mean[c] + s.momentum * static_cast<float>(mean);
  const double unbiased = n > 1 ? var * n / (n - 1) : var;
  running_var[c] = (1 - s.momentum) * running_var[c] + s.momentum * static_cast<float>(unbiased);
}

// y = (x - mean) * gamma * invstd + beta, with per-channel mean and invstd.
__global__ void bn_apply_kernel(float* __restrict__ y, const float* __restrict__ x, const float* gamma,
                                const float* beta, const float* mean, const float* invstd, BatchNormShape s,
                                bool from_running_var) {
  const int64_t total = s.N * s.C * s.HW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = total <= UINT32_MAX ? (uint32_t(i) / uint32_t(s.HW)) % uint32_t(s.C) : (i / s.HW) % s.C;
    const float is = from_running_var ? 1.f / sqrtf(invstd[c] + s.eps) : invstd[c];
    y[i] = (x[i] - mean[c]) * (gamma[c] * is) + beta[c];
  }
}

// Grid (C, splits): sums of dy and dy * xhat over chunk blockIdx.y of channel blockIdx.x.
__global__ void __launch_bounds__(kThreads)
bn_backward_partial_kernel(double* chunk, const float* __restrict__ dy, const float* __restrict__ x,
                           const float* save_mean, const float* save_invstd, BatchNormShape s, int64_t per_split) {
  const int64_t c = blockIdx.x, n = s.N * s.HW;
  const int64_t lo = blockIdx.y * per_split, hi = min(n, lo + per_split);
  const float m = save_mean[c], is = save_invstd[c];
  double sdy = 0, sdyx = 0;
  for (int64_t i = lo + threadIdx.x; i < hi; i += kThreads) {
    const int64_t k = at(uint32_t(i), c, s);
    sdy += dy[k];
    sdyx += dy[k] * ((x[k] - m) * is);
  }
  sdy = block_sum(sdy);
  sdyx = block_sum(sdyx);
  if (threadIdx.x == 0) {
    chunk[(c * gridDim.y + blockIdx.y) * 2] = sdy;
    chunk[(c * gridDim.y + blockIdx.y) * 2 + 1] = sdyx;
  }
}

__global__ void bn_backward_finish_kernel(float* stats, float* dgamma, float* dbeta, const double* chunk,
                                          int64_t splits, int64_t C) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  double sdy = 0, sdyx = 0;
  for (int64_t k = 0; k < splits; ++k) sdy += chunk[(c * splits + k) * 2], sdyx += chunk[(c * splits + k) * 2 + 1];
  stats[c] = static_cast<float>(sdy);
  stats[C + c] = static_cast<float>(sdyx);
  if (dgamma) dgamma[c] = static_cast<float>(sdyx);
  if (dbeta) dbeta[c] = static_cast<float>(sdy);
}

__global__ void bn_backward_apply_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                         const float* __restrict__ x, const float* gamma, const float* save_mean,
                                         const float* save_invstd, const float* stats, BatchNormShape s) {
  const int64_t total = s.N * s.C * s.HW;
  const float n = static_cast<float>(s.N * s.HW);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = total <= UINT32_MAX ? (uint32_t(i) / uint32_t(s.HW)) % uint32_t(s.C) : (i / s.HW) % s.C;
    const float is = save_invstd[c];
    dx[i] = gamma[c] * is / n * (n * dy[i] - stats[c] - (x[i] - save_mean[c]) * is * stats[s.C + c]);
  }
}

void check_shape(const BatchNormShape& s) {
  HG_ASSERT(s.N * s.HW <= UINT32_MAX, "BatchNorm: at most 2^32 values per channel, got ", s.N * s.HW);
}

}  // namespace

int64_t batchnorm_workspace_floats(const BatchNormShape& s) {
  return ((2 * s.C + 1) & ~int64_t(1)) + 2 * 2 * s.C * split_for(s).splits;
}

void batchnorm_forward_train(float* y, const float* x, const float* gamma, const float* beta,
                             float* running_mean, float* running_var, float* save_mean,
                             float* save_invstd, const BatchNormShape& s, float* workspace) {
  check_shape(s);
  const Split p = split_for(s);
  double* chunk = chunk_sums(workspace, s);
  bn_stats_partial_kernel<<<dim3(unsigned(s.C), unsigned(p.splits)), kThreads, 0, stream()>>>(chunk, x, s,
                                                                                             p.per_split);
  CUDA_CHECK_LAUNCH();
  bn_stats_finish_kernel<<<grid_for(s.C), kBlock, 0, stream()>>>(chunk, p.splits, x, running_mean, running_var,
                                                                 save_mean, save_invstd, s);
  CUDA_CHECK_LAUNCH();
  bn_apply_kernel<<<grid_for(s.N * s.C * s.HW), kBlock, 0, stream()>>>(y, x, gamma, beta, save_mean, save_invstd, s,
                                                                       false);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_forward_eval(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, const BatchNormShape& s) {
  check_shape(s);
  bn_apply_kernel<<<grid_for(s.N * s.C * s.HW), kBlock, 0, stream()>>>(y, x, gamma, beta, running_mean, running_var,
                                                                       s, true);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        const BatchNormShape& s, float* workspace) {
  check_shape(s);
  const Split p = split_for(s);
  double* chunk = chunk_sums(workspace, s);
  bn_backward_partial_kernel<<<dim3(unsigned(s.C), unsigned(p.splits)), kThreads, 0, stream()>>>(
      chunk, dy, x, save_mean, save_invstd, s, p.per_split);
  CUDA_CHECK_LAUNCH();
  bn_backward_finish_kernel<<<grid_for(s.C), kBlock, 0, stream()>>>(workspace, dgamma, dbeta, chunk, p.splits, s.C);
  CUDA_CHECK_LAUNCH();
  bn_backward_apply_kernel<<<grid_for(s.N * s.C * s.HW), kBlock, 0, stream()>>>(dx, dy, x, gamma, save_mean,
                                                                                save_invstd, workspace, s);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
