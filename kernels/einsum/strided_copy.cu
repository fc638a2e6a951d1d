#include "kernels/common.cuh"
#include "kernels/einsum/strided_copy.h"

namespace handgrad::cuda {

namespace {

// Generic gather: one output element per thread, writes coalesced; reads coalesced whenever
// the output's last axis is also contiguous in the input.
template <typename Index>
__global__ void strided_copy_kernel(float* __restrict__ out, const float* __restrict__ in,
                                    const __grid_constant__ StridedView<1> view, Index n) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < n;
       i += Index(gridDim.x) * blockDim.x) {
    int64_t off[1];
    view.offsets<Index>(i, off);
    out[i] = __ldg(in + off[0]);
  }
}

constexpr int kTile = 32;
constexpr int kTileRows = 8;

// Tiled transpose for permutes that move the input's contiguous axis. Output axis `p` is the
// one with input stride 1, output axis `last` is contiguous in the output. A 32x32 tile of the
// (p, last) plane is read along p (coalesced in the input), staged in shared memory (33 columns:
// no bank conflicts), and written along `last` (coalesced in the output). The remaining axes
// ("rest") index whole planes.
struct TransposePlan {
  int64_t P = 0, L = 0;          // extents of output axes p and last
  int64_t in_stride_l = 0;       // input stride of output axis `last`
  int64_t out_stride_p = 0;      // output stride of axis p
  StridedView<2> rest;           // operand 0: input offsets, operand 1: output offsets
  int64_t rest_count = 1;
};

__global__ void transpose_tile_kernel(float* __restrict__ out, const float* __restrict__ in,
                                      const __grid_constant__ TransposePlan plan) {
  __shared__ float tile[kTile][kTile + 1];
  const int64_t tiles_p = (plan.P + kTile - 1) / kTile;
  for (int64_t rest = blockIdx.z; rest < plan.rest_count; rest += gridDim.z) {
    int64_t base[2];
    plan.rest.offsets<int64_t>(rest, base);
    for (int64_t tp = blockIdx.y; tp < tiles_p; tp += gridDim.y) {
      const int64_t p0 = tp * kTile, l0 = blockIdx.x * int64_t(kTile);
      for (int j = threadIdx.y; j < kTile; j += kTileRows) {
        const int64_t p = p0 + threadIdx.x, l = l0 + j;
        if (p < plan.P && l < plan.L) tile[j][threadIdx.x] = __ldg(in + base[0] + l * plan.in_stride_l + p);
      }
      __syncthreads();
      for (int j = threadIdx.y; j < kTile; j += kTileRows) {
        const int64_t p = p0 + j, l = l0 + threadIdx.x;
        if (p < plan.P && l < plan.L) out[base[1] + p * plan.out_stride_p + l] = tile[threadIdx.x][j];
      }
      __syncthreads();
    }
  }
}

}  // namespace

void strided_copy(float* out, const float* in, const StridedView<1>& view) {
  const int64_t n = view.numel();
  if (n == 0) return;
  const StridedCopyPath path = strided_copy_path(view);
  if (path.kernel == StridedCopyKernel::TiledTranspose) {
    const int p = path.p, last = view.ndim - 1;
    TransposePlan plan;
    plan.P = view.shape[p];
    plan.L = view.shape[last];
    plan.in_stride_l = view.stride[0][last];
    const Shape out_strides = contiguous_strides(Shape(view.shape, view.shape + view.ndim));
    plan.out_stride_p = out_strides[p];
    Shape rest_shape, rest_in, rest_out;
    for (int d = 0; d < last; ++d) {
      if (d == p) continue;
      rest_shape.push_back(view.shape[d]);
      rest_in.push_back(view.stride[0][d]);
      rest_out.push_back(out_strides[d]);
    }
    plan.rest = make_strided_view<2>(rest_shape, {rest_in, rest_out});
    plan.rest_count = plan.rest.numel();
    dim3 grid(static_cast<unsigned>((plan.L + kTile - 1) / kTile),
              static_cast<unsigned>(std::min<int64_t>((plan.P + kTile - 1) / kTile, kMaxGridYZ)),
              static_cast<unsigned>(std::min<int64_t>(plan.rest_count, kMaxGridYZ)));
    HG_ASSERT((plan.L + kTile - 1) / kTile <= INT32_MAX, "permute extent too large");
    HG_LAUNCH(grid, dim3(kTile, kTileRows), 0, stream(), transpose_tile_kernel)(out, in, plan);
  } else if (path.kernel == StridedCopyKernel::Gather32) {
    HG_LAUNCH(grid_for(n), kBlock, 0, stream(), strided_copy_kernel<uint32_t>)(out, in, view,
                                                                         static_cast<uint32_t>(n));
  } else {
    HG_LAUNCH(grid_for(n), kBlock, 0, stream(), strided_copy_kernel<int64_t>)(out, in, view, n);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
