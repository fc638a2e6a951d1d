// Channels-last BatchNorm on the GPU: the CUDA twins of batchnorm_nhwc_cpu.cpp (batchnorm.h
// states the contract), x as [rows, C], rows = N*H*W, with the ReLU and the residual join folded
// in as on the CPU.
//
// Per-channel sums (the statistics; dbeta and dgamma): a grid of (channel tiles of 32) x (row
// chunks). In a block, 32 threads run along the channels (one row of a tile is one 128-byte
// read) and 8 along the rows; each thread sums its rows in double, the block adds its 8 lanes in
// a fixed order and writes its chunk's partial sums, and a finish kernel adds each channel's
// chunks in chunk order: deterministic, and the grid fills the GPU whatever the shape (a
// 64-channel layer at 14x14 still gets ~4 blocks per SM). The arithmetic is the CPU twin's,
// term for term: the statistics in two passes in double (the mean, then squared deviations),
// the backward terms formed in float and summed in double.
#include <algorithm>

#include "kernels/common.cuh"
#include "kernels/nn/batchnorm.h"

namespace handgrad::cuda {

namespace {

constexpr int kTileC = 32;         // channels per block (threadIdx.x)
constexpr int kLanes = 8;          // rows summed side by side (threadIdx.y)
constexpr int64_t kMinRows = 64;   // rows per chunk at least: fewer cost more than they spread
constexpr int64_t kMaxChunks = std::min<int64_t>(1024, kMaxGridYZ);  // gridDim.y

int64_t chunks_for(int64_t rows, int64_t C) {
  const int64_t tiles = (C + kTileC - 1) / kTileC;
  const int64_t want = (4 * int64_t(sm_count()) + tiles - 1) / tiles;  // ~4 blocks per SM
  return std::clamp<int64_t>(std::min(want, rows / kMinRows), 1, kMaxChunks);
}

// The workspace, in doubles: [2 * chunks * C partial sums][C means]; then, in floats, the
// backward pass's per-channel k, a, bq (3 * C).
struct Workspace {
  double* partial;
  double* mean;
  float* k;
  float* a;
  float* bq;
  Workspace(float* ws, int64_t chunks, int64_t C) {
    partial = reinterpret_cast<double*>(ws);
    mean = partial + 2 * chunks * C;
    k = reinterpret_cast<float*>(mean + C);
    a = k + C;
    bq = a + C;
  }
};

// The terms each row adds to a channel's sums (T of them).
struct SumX {
  static constexpr int T = 1;
  const float* x;
  __device__ void add(double (&acc)[1], int64_t r, int64_t c, int64_t C) const { acc[0] += x[r * C + c]; }
};
struct SumSquaredDeviation {
  static constexpr int T = 1;
  const float* x;
  const double* mean;
  __device__ void add(double (&acc)[1], int64_t r, int64_t c, int64_t C) const {
    const double d = x[r * C + c] - mean[c];
    acc[0] += d * d;
  }
};
// The gradient reaching the BN (dy where the ReLU after it passed its input on), and that times
// xhat: both formed in float, as on the CPU.
struct MaskedGradient {
  const float* dy;
  const float* relu_out;  // null: no ReLU after the BN
  __device__ float at(int64_t i) const { return relu_out && !(relu_out[i] > 0.f) ? 0.f : dy[i]; }
};
struct SumBackward {
  static constexpr int T = 2;
  MaskedGradient g;
  const float* x;
  const float* mean;
  const float* invstd;
  __device__ void add(double (&acc)[2], int64_t r, int64_t c, int64_t C) const {
    const int64_t i = r * C + c;
    const float gi = g.at(i);
    const float gx = gi * ((x[i] - mean[c]) * invstd[c]);
    acc[0] += gi;
    acc[1] += gx;
  }
};

// Grid (channel tiles, chunks), block (kTileC, kLanes): partial[(t * chunks + chunk) * C + c].
// Chunk k is rows [k * per_chunk, (k + 1) * per_chunk) (no 64-bit division in the kernel: it is
// a call whose live registers ptxas spills).
template <class Term>
__global__ void __launch_bounds__(kTileC * kLanes)
channel_partial_sums_kernel(double* __restrict__ partial, Term term, int64_t rows, int64_t C, int64_t chunks,
                            int64_t per_chunk) {
  __shared__ double lanes[Term::T][kLanes][kTileC];
  const int64_t c = blockIdx.x * int64_t(kTileC) + threadIdx.x, chunk = blockIdx.y;
  const int64_t r0 = chunk * per_chunk, r1 = min(rows, r0 + per_chunk);
  double acc[Term::T] = {};
  if (c < C)
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kLanes) term.add(acc, r, c, C);
  for (int t = 0; t < Term::T; ++t) lanes[t][threadIdx.y][threadIdx.x] = acc[t];
  __syncthreads();
  if (threadIdx.y == 0 && c < C)
    for (int t = 0; t < Term::T; ++t) {
      double s = 0;
      for (int l = 0; l < kLanes; ++l) s += lanes[t][l][threadIdx.x];
      partial[(t * chunks + chunk) * C + c] = s;
    }
}

template <class Term>
void channel_partial_sums(double* partial, const Term& term, int64_t rows, int64_t C, int64_t chunks) {
  const dim3 grid(static_cast<unsigned>((C + kTileC - 1) / kTileC), static_cast<unsigned>(chunks));
  HG_LAUNCH(grid, dim3(kTileC, kLanes), 0, stream(), channel_partial_sums_kernel<Term>)(partial, term, rows, C, chunks,
                                                                                 (rows + chunks - 1) / chunks);
  CUDA_CHECK_LAUNCH();
}

// Channel c's sum of term t, over the chunks in order.
__device__ double chunk_total(const double* partial, int t, int64_t c, int64_t C, int64_t chunks) {
  double s = 0;
  for (int64_t k = 0; k < chunks; ++k) s += partial[(t * chunks + k) * C + c];
  return s;
}

__global__ void mean_finish_kernel(double* mean, const double* partial, int64_t rows, int64_t C, int64_t chunks) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c < C) mean[c] = chunk_total(partial, 0, c, C, chunks) / rows;
}

__global__ void stats_finish_kernel(float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                                    const double* mean, const double* partial, int64_t rows, int64_t C,
                                    int64_t chunks, float eps, float momentum) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const double var = chunk_total(partial, 0, c, C, chunks) / rows;
  save_mean[c] = static_cast<float>(mean[c]);
  save_invstd[c] = static_cast<float>(1.0 / sqrt(var + eps));
  running_mean[c] = (1 - momentum) * running_mean[c] + momentum * save_mean[c];
  const double unbiased = rows > 1 ? var * rows / (rows - 1) : var;
  running_var[c] = (1 - momentum) * running_var[c] + momentum * static_cast<float>(unbiased);
}

__global__ void scale_shift_kernel(float* scale, float* shift, const float* gamma, const float* beta,
                                   const float* mean, const float* invstd, int64_t C) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  scale[c] = gamma[c] * invstd[c];
  shift[c] = beta[c] - mean[c] * scale[c];
}

__global__ void eval_scale_shift_kernel(float* scale, float* shift, const float* gamma, const float* beta,
                                        const float* running_mean, const float* running_var, int64_t C, float eps) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  scale[c] = gamma[c] * (1.f / sqrtf(running_var[c] + eps));
  shift[c] = beta[c] - running_mean[c] * scale[c];
}

// y = max(x * scale + shift + (x2 * scale2 + shift2 | residual | 0), 0), one element a thread.
template <typename Index>
__global__ void scale_shift_relu_kernel(float* __restrict__ y, const float* __restrict__ x,
                                        const float* __restrict__ scale, const float* __restrict__ shift,
                                        const float* __restrict__ x2, const float* __restrict__ scale2,
                                        const float* __restrict__ shift2, const float* __restrict__ residual, Index n,
                                        Index C) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < n; i += Index(gridDim.x) * blockDim.x) {
    const Index c = i % C;
    const float v = x[i] * scale[c] + shift[c];
    const float other = x2 ? x2[i] * scale2[c] + shift2[c] : residual ? residual[i] : 0.f;
    const float r = x2 || residual ? v + other : v;
    y[i] = r < 0.f ? 0.f : r;  // std::max(r, 0.f), as the CPU: a NaN stays NaN (fmaxf would make it 0)
  }
}

__global__ void backward_finish_kernel(float* dgamma, float* dbeta, float* k, float* a, float* bq,
                                       const double* partial, const float* gamma, const float* invstd, int64_t rows,
                                       int64_t C, int64_t chunks) {
  const int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (c >= C) return;
  const double sum_g = chunk_total(partial, 0, c, C, chunks), sum_gx = chunk_total(partial, 1, c, C, chunks);
  if (dgamma) dgamma[c] = static_cast<float>(sum_gx);
  if (dbeta) dbeta[c] = static_cast<float>(sum_g);
  k[c] = gamma[c] * invstd[c] / rows;
  a[c] = static_cast<float>(sum_g);
  bq[c] = static_cast<float>(sum_gx);
}

// dx = k * (n * g - a - (x - mean) * invstd * bq), with g the masked gradient.
template <typename Index>
__global__ void backward_apply_kernel(float* __restrict__ dx, MaskedGradient g, const float* __restrict__ x,
                                      const float* __restrict__ mean, const float* __restrict__ invstd,
                                      const float* __restrict__ k, const float* __restrict__ a,
                                      const float* __restrict__ bq, float rows, Index n, Index C) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < n; i += Index(gridDim.x) * blockDim.x) {
    const Index c = i % C;
    dx[i] = k[c] * (rows * g.at(i) - a[c] - (x[i] - mean[c]) * invstd[c] * bq[c]);
  }
}

void check(int64_t rows, int64_t C) {
  HG_REQUIRE(rows > 0 && C > 0, "channels-last BatchNorm needs rows and channels, got ", rows, " x ", C);
  HG_ASSERT(C <= INT32_MAX, "too many channels");
}

}  // namespace

int64_t batchnorm_nhwc_workspace_floats(int64_t rows, int64_t C) {
  // partial sums and means in doubles (2 floats each), then k, a, bq
  return 2 * (2 * chunks_for(rows, C) * C + C) + 3 * C;
}

void batchnorm_stats_nhwc(float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                          const float* x, int64_t rows, int64_t C, float eps, float momentum, float* workspace) {
  check(rows, C);
  const int64_t chunks = chunks_for(rows, C);
  const Workspace ws(workspace, chunks, C);
  channel_partial_sums(ws.partial, SumX{x}, rows, C, chunks);
  HG_LAUNCH(grid_for(C), kBlock, 0, stream(), mean_finish_kernel)(ws.mean, ws.partial, rows, C, chunks);
  CUDA_CHECK_LAUNCH();
  channel_partial_sums(ws.partial, SumSquaredDeviation{x, ws.mean}, rows, C, chunks);
  HG_LAUNCH(grid_for(C), kBlock, 0, stream(), stats_finish_kernel)(save_mean, save_invstd, running_mean, running_var,
                                                            ws.mean, ws.partial, rows, C, chunks, eps, momentum);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_scale_shift(float* scale, float* shift, const float* gamma, const float* beta, const float* mean,
                           const float* invstd, int64_t C) {
  HG_LAUNCH(grid_for(C), kBlock, 0, stream(), scale_shift_kernel)(scale, shift, gamma, beta, mean, invstd, C);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_eval_scale_shift(float* scale, float* shift, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int64_t C, float eps) {
  HG_LAUNCH(grid_for(C), kBlock, 0, stream(), eval_scale_shift_kernel)(scale, shift, gamma, beta, running_mean,
                                                                running_var, C, eps);
  CUDA_CHECK_LAUNCH();
}

void scale_shift_relu_nhwc(float* y, const float* x, const float* scale, const float* shift, const float* x2,
                           const float* scale2, const float* shift2, const float* residual, int64_t rows, int64_t C) {
  check(rows, C);
  const int64_t n = rows * C;
  if (n <= INT32_MAX)
    HG_LAUNCH(grid_for(n), kBlock, 0, stream(), scale_shift_relu_kernel<uint32_t>)(
        y, x, scale, shift, x2, scale2, shift2, residual, static_cast<uint32_t>(n), static_cast<uint32_t>(C));
  else
    HG_LAUNCH(grid_for(n), kBlock, 0, stream(), scale_shift_relu_kernel<int64_t>)(y, x, scale, shift, x2, scale2, shift2,
                                                                            residual, n, C);
  CUDA_CHECK_LAUNCH();
}

void batchnorm_backward_nhwc(float* dx, float* dgamma, float* dbeta, const float* dy, const float* relu_out,
                             const float* x, const float* gamma, const float* save_mean, const float* save_invstd,
                             int64_t rows, int64_t C, float* workspace) {
  check(rows, C);
  const int64_t chunks = chunks_for(rows, C);
  const Workspace ws(workspace, chunks, C);
  const MaskedGradient g{dy, relu_out};
  channel_partial_sums(ws.partial, SumBackward{g, x, save_mean, save_invstd}, rows, C, chunks);
  HG_LAUNCH(grid_for(C), kBlock, 0, stream(), backward_finish_kernel)(dgamma, dbeta, ws.k, ws.a, ws.bq, ws.partial, gamma,
                                                               save_invstd, rows, C, chunks);
  CUDA_CHECK_LAUNCH();
  const int64_t n = rows * C;
  if (n <= INT32_MAX)
    HG_LAUNCH(grid_for(n), kBlock, 0, stream(), backward_apply_kernel<uint32_t>)(
        dx, g, x, save_mean, save_invstd, ws.k, ws.a, ws.bq, static_cast<float>(rows), static_cast<uint32_t>(n),
        static_cast<uint32_t>(C));
  else
    HG_LAUNCH(grid_for(n), kBlock, 0, stream(), backward_apply_kernel<int64_t>)(dx, g, x, save_mean, save_invstd, ws.k, ws.a,
                                                                         ws.bq, static_cast<float>(rows), n, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
