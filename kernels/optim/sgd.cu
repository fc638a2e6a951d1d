#include "kernels/common.cuh"
#include "kernels/optim/sgd.h"

namespace handgrad::cuda {

// Both updates round each product and sum on its own (__fmul_rn, __fadd_rn, __fsub_rn), as the
// CPU twins do: left to itself nvcc contracts p - lr * g into one FFMA, which differs from the
// twin in the last bit for ~14% of values. These kernels are memory-bound, so the two
// roundings cost nothing, and the twins can be compared bit for bit.
namespace {
__global__ void sgd_step_kernel(float* __restrict__ params, const float* __restrict__ grads,
                                const float* __restrict__ lr, int64_t groups, int64_t n,
                                int64_t* advance_step) {
  const int64_t total = groups * n;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total;
       i += int64_t(gridDim.x) * blockDim.x)
    params[i] = __fsub_rn(params[i], __fmul_rn(lr[i / n], grads[i]));
  if (advance_step && blockIdx.x == 0 && threadIdx.x == 0) ++*advance_step;
}
}  // namespace

void sgd_step(float* params, const float* grads, const float* lr, int64_t groups, int64_t n,
              int64_t* advance_step) {
  const int64_t total = groups * n;
  if (total == 0 && !advance_step) return;
  HG_LAUNCH(grid_for(std::max<int64_t>(total, 1)), kBlock, 0, stream(), sgd_step_kernel)(
      params, grads, lr, groups, n, advance_step);
  CUDA_CHECK_LAUNCH();
}

namespace {
__global__ void sgd_momentum_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ v,
                                    int64_t n, float lr, float mu) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const float vi = __fadd_rn(__fmul_rn(mu, v[i]), g[i]);
    v[i] = vi;
    p[i] = __fsub_rn(p[i], __fmul_rn(lr, vi));
  }
}

// Element t of the concatenated ranges: range r holds t in [start[r], start[r + 1]).
struct RangeMap {
  int count;
  int64_t begin[ParamRanges::kMax], start[ParamRanges::kMax + 1];
};

__global__ void sgd_momentum_ranges_kernel(float* __restrict__ p, const float* __restrict__ g, float* __restrict__ v,
                                           RangeMap map, float lr, float mu) {
  const int64_t total = map.start[map.count];
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total; t += int64_t(gridDim.x) * blockDim.x) {
    int r = 0;
    while (t >= map.start[r + 1]) ++r;
    const int64_t i = map.begin[r] + (t - map.start[r]);
    const float vi = __fadd_rn(__fmul_rn(mu, v[i]), g[i]);
    v[i] = vi;
    p[i] = __fsub_rn(p[i], __fmul_rn(lr, vi));
  }
}
}  // namespace

void sgd_momentum_step(float* params, const float* grads, float* velocity, const ParamRanges& ranges, float lr,
                       float mu) {
  HG_ASSERT(ranges.count >= 0 && ranges.count <= ParamRanges::kMax, "sgd: ", ranges.count, " ranges");
  RangeMap map{ranges.count, {}, {}};
  for (int r = 0; r < ranges.count; ++r) {
    HG_ASSERT(ranges.end[r] >= ranges.begin[r], "sgd: a range that ends before it begins");
    map.begin[r] = ranges.begin[r];
    map.start[r + 1] = map.start[r] + (ranges.end[r] - ranges.begin[r]);
  }
  const int64_t total = map.start[ranges.count];
  if (total == 0) return;
  HG_LAUNCH(grid_for(total), kBlock, 0, stream(), sgd_momentum_ranges_kernel)(params, grads, velocity, map, lr, mu);
  CUDA_CHECK_LAUNCH();
}

void sgd_momentum_step(float* params, const float* grads, float* velocity, int64_t n, float lr, float mu) {
  if (n == 0) return;
  HG_LAUNCH(grid_for(n), kBlock, 0, stream(), sgd_momentum_kernel)(params, grads, velocity, n, lr, mu);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
