#include "kernels/common.cuh"
#include "kernels/einsum/reduce.h"

namespace handgrad::cuda {

namespace {

constexpr int kReduceThreads = 256;

// How one launch of sum_middle_kernel covers [outer, R, inner].
// A block is `slots` x `groups` x `width` threads: `width` consecutive inner indices (the whole
// inner extent when it is <= 256), `groups` (a power of two) walking R in lock step, and
// `slots` outer indices side by side. Because width consecutive lanes read consecutive
// addresses and, when width == inner, the groups and then the slots read consecutive rows,
// every warp's loads are coalesced whatever inner is: 1 (row sums), 3, 100 or 10^6 (column
// sums). Groups are only as many as R has rows, and the threads they leave fill slots: for
// [100000, 2, 2] a block is 64 slots x 2 groups x 2 lanes, not 4 busy threads of 256. A long R
// with few outputs is split across `splits` blocks.
struct ReducePlan {
  int width = 1, groups = 1, slots = 1;
  int64_t inner_tiles = 1, outer_blocks = 1, splits = 1, rows_per_split = 0;
  int threads() const { return slots * groups * width; }
};

// The largest power of two <= min(x, cap) (1 when x < 1); cap <= 2^30.
int pow2_at_most(int64_t x, int cap) {
  int p = 1;
  while (2 * int64_t(p) <= std::min<int64_t>(x, cap)) p *= 2;
  return p;
}

ReducePlan plan_reduce(int64_t outer, int64_t R, int64_t inner) {
  ReducePlan p;
  p.width = static_cast<int>(inner <= kReduceThreads ? inner : kReduceThreads);
  const int most_groups = pow2_at_most(kReduceThreads / p.width, kReduceThreads);
  p.groups = 1;  // the smallest power of two >= R, at most most_groups
  while (p.groups < most_groups && p.groups < R) p.groups *= 2;
  p.slots = pow2_at_most(outer, kReduceThreads / (p.width * p.groups));
  p.inner_tiles = (inner + p.width - 1) / p.width;
  p.outer_blocks = (outer + p.slots - 1) / p.slots;
  // Aim for ~16 resident blocks per SM; split R when outer x tiles alone cannot provide them,
  // but keep at least 8 rows per group per split so the partial sums stay worth their traffic.
  const int64_t target = int64_t(sm_count()) * 16;
  const int64_t base = p.inner_tiles * p.outer_blocks;
  if (base < target) {
    const int64_t max_splits = std::max<int64_t>(1, R / (int64_t(p.groups) * 8));
    p.splits = std::min<int64_t>({(target + base - 1) / base, max_splits, kMaxGridYZ});
  }
  p.rows_per_split = (R + p.splits - 1) / p.splits;
  return p;
}

// out[(split * outer + o) * inner + i] = sum over this split's rows of in[o, r, i].
__global__ void __launch_bounds__(kReduceThreads)
sum_middle_kernel(float* __restrict__ out, const float* __restrict__ in, int64_t outer, int64_t R,
                  int64_t inner, int width, int groups, int slots, int64_t rows_per_split) {
  __shared__ float partial[kReduceThreads];
  const int t = threadIdx.x;
  const int lane = t % width;
  const int group = (t / width) % groups;
  const int slot = t / (width * groups);
  const int64_t i = blockIdx.x * int64_t(width) + lane;
  const int64_t r_begin = blockIdx.z * rows_per_split;
  const int64_t r_end = min(R, r_begin + rows_per_split);

  // Every thread runs the same number of iterations (the __syncthreads below need it).
  for (int64_t o0 = int64_t(blockIdx.y) * slots; o0 < outer; o0 += int64_t(gridDim.y) * slots) {
    const int64_t o = o0 + slot;
    float acc = 0.f;
    if (o < outer && i < inner) {
      const float* p = in + o * R * inner + i;
      int64_t r = r_begin + group;
      // Eight independent loads in flight per thread before any add depends on them.
      float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      for (; r + 7 * int64_t(groups) < r_end; r += 8 * int64_t(groups)) {
#pragma unroll
        for (int u = 0; u < 8; ++u) a[u] += __ldg(p + (r + u * int64_t(groups)) * inner);
      }
      for (; r < r_end; r += groups) a[0] += __ldg(p + r * inner);
      acc = ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
    }
    partial[t] = acc;
    __syncthreads();
    // Tree over the groups of each slot: lanes with the same inner index combine, pairwise.
    for (int s = groups / 2; s > 0; s /= 2) {
      if (group < s) partial[t] += partial[t + s * width];
      __syncthreads();
    }
    if (group == 0 && o < outer && i < inner) out[(blockIdx.z * outer + o) * inner + i] = partial[t];
    __syncthreads();  // `partial` is reused by the next o0
  }
}

void launch(float* out, const float* in, int64_t outer, int64_t R, int64_t inner,
            const ReducePlan& p) {
  dim3 grid(static_cast<unsigned>(p.inner_tiles),
            static_cast<unsigned>(std::min<int64_t>(p.outer_blocks, kMaxGridYZ)),
            static_cast<unsigned>(p.splits));
  HG_LAUNCH(grid, p.threads(), 0, stream(), sum_middle_kernel)(out, in, outer, R, inner, p.width, p.groups, p.slots,
                                                        p.rows_per_split);
  CUDA_CHECK_LAUNCH();
}

}  // namespace

int64_t sum_middle_workspace(int64_t outer, int64_t R, int64_t inner) {
  if (outer == 0 || inner == 0) return 0;
  const ReducePlan p = plan_reduce(outer, R, inner);
  return p.splits > 1 ? p.splits * outer * inner : 0;
}

void sum_middle(float* out, const float* in, int64_t outer, int64_t R, int64_t inner,
                float* workspace) {
  if (outer == 0 || inner == 0) return;
  HG_ASSERT(inner <= int64_t(65535) * kReduceThreads * 1024, "inner extent too large");
  if (R == 0) {
    CUDA_CHECK(cudaMemsetAsync(out, 0, sizeof(float) * outer * inner, stream()));
    return;
  }
  const ReducePlan p = plan_reduce(outer, R, inner);
  if (p.splits == 1) {
    launch(out, in, outer, R, inner, p);
    return;
  }
  HG_ASSERT(workspace != nullptr, "sum_middle needs a workspace for this shape");
  // Pass 1: partial sums [splits, outer, inner]. Pass 2: sum them over splits, which is itself
  // a middle-axis sum of shape [1, splits, outer * inner] (and small enough for one pass).
  launch(workspace, in, outer, R, inner, p);
  const int64_t n = outer * inner;
  ReducePlan second = plan_reduce(1, p.splits, n);
  second.splits = 1;
  second.rows_per_split = p.splits;
  launch(out, workspace, 1, p.splits, n, second);
}

}  // namespace handgrad::cuda
