#include "kernels/common.cuh"
#include "kernels/mlp/mlp_train.h"

namespace handgrad::cuda {

namespace {

// Shared memory of one block: W1 (d*h), W2 (h), the sampled x (d), a (h), warp partials (32).
size_t fused_smem_bytes(int64_t d, int64_t h) { return sizeof(float) * (d * h + 2 * h + d + 32); }

// One block per model, thread j owns hidden unit j (column j of W1 and W2[j]): it computes
// a_j, applies relu, and updates its own column, so only y' needs a block-wide reduction.
// Reads of W1[k*h + j] by consecutive threads are consecutive: no bank conflicts.
// Launched with up to kMaxThreads threads: the bound holds ptxas to the 64 registers a thread
// of so large a block can have (65536 per SM); given more, every 1024-thread launch would fail.
constexpr int kMaxThreads = 1024;
__global__ void __launch_bounds__(kMaxThreads)
mlp_fused_kernel(float* __restrict__ params, float* __restrict__ losses, int64_t* __restrict__ diverged_at, MlpRun r) {
  HG_EXTERN_SHARED(float, smem);
  const int64_t D = r.d, H = r.h;
  float* W1 = smem;
  float* W2 = W1 + D * H;
  float* x = W2 + H;
  float* a = x + D;
  float* warp_sums = a + H;
  const int64_t m = blockIdx.x;
  const int tid = threadIdx.x, nthreads = blockDim.x;
  const int lane = tid % 32, warp = tid / 32, nwarps = (nthreads + 31) / 32;
  float* gparams = params + m * mlp_param_count(D, H);
  const float lr = r.lr[m];

  for (int64_t k = tid; k < D * H + H; k += nthreads) smem[k] = gparams[k];
  int64_t diverged = -1;
  for (int64_t t = 0; t < r.iters; ++t) {
    const int64_t i = r.indices[t];
    __syncthreads();  // the previous step is done with x, a and warp_sums
    for (int64_t k = tid; k < D; k += nthreads) x[k] = r.X[i * D + k];
    __syncthreads();
    // Forward: a_j, relu, and this thread's share of y' = relu(a) . W2.
    float part = 0.f;
    for (int64_t j = tid; j < H; j += nthreads) {
      float acc = 0.f;
      for (int64_t k = 0; k < D; ++k) acc = fmaf(x[k], W1[k * H + j], acc);
      a[j] = acc;
      part = fmaf(fmaxf(acc, 0.f), W2[j], part);
    }
    for (int off = 16; off > 0; off /= 2) part += __shfl_xor_sync(0xffffffffu, part, off);
    if (lane == 0) warp_sums[warp] = part;
    __syncthreads();
    float yhat = 0.f;
    for (int w = 0; w < nwarps; ++w) yhat += warp_sums[w];  // same order in every thread
    const float diff = yhat - r.Y[i];
    const float loss = diff * diff;
    if (tid == 0) losses[m * r.iters + t] = loss;
    if (!(loss <= kDivergedLoss)) {  // uniform across the block: every thread has the same loss
      diverged = t;
      break;
    }
    // Backward and update, each thread on its own hidden units.
    const float g = 2.f * diff;
    for (int64_t j = tid; j < H; j += nthreads) {
      const float aj = a[j];
      const float da = aj >= 0.f ? g * W2[j] : 0.f;
      W2[j] -= lr * (g * fmaxf(aj, 0.f));
      for (int64_t k = 0; k < D; ++k) W1[k * H + j] -= (lr * x[k]) * da;
    }
  }
  __syncthreads();
  for (int64_t k = tid; k < D * H + H; k += nthreads) gparams[k] = smem[k];
  if (diverged >= 0)
    for (int64_t u = diverged + 1 + tid; u < r.iters; u += nthreads) losses[m * r.iters + u] = __int_as_float(0x7fc00000);
  if (tid == 0) diverged_at[m] = diverged;
}

int max_smem_optin() {
  static const int bytes = [] {
    int dev = 0, v = 0;
    CUDA_CHECK(cudaGetDevice(&dev));
    CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    return v;
  }();
  return bytes;
}

}  // namespace

bool mlp_fused_fits(int64_t d, int64_t h) {
  return fused_smem_bytes(d, h) <= static_cast<size_t>(max_smem_optin());
}

void mlp_train_fused(float* params, float* losses, int64_t* diverged_at, const MlpRun& r) {
  HG_ASSERT(mlp_fused_fits(r.d, r.h), "fused MLP weights do not fit in shared memory");
  HG_ASSERT(r.models <= INT32_MAX, "too many models");
  const size_t smem = fused_smem_bytes(r.d, r.h);
  CUDA_CHECK(cudaFuncSetAttribute(mlp_fused_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                  static_cast<int>(smem)));
  // One thread per hidden unit, in whole warps, at most kMaxThreads (then each thread takes several).
  const int threads = static_cast<int>(std::min<int64_t>(kMaxThreads, std::max<int64_t>(32, (r.h + 31) / 32 * 32)));
  HG_LAUNCH(static_cast<unsigned>(r.models), threads, smem, stream(), mlp_fused_kernel)(params, losses,
                                                                                 diverged_at, r);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
