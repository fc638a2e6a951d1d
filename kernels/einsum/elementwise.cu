#include "kernels/common.cuh"
#include "kernels/einsum/elementwise.h"

namespace handgrad::cuda {

namespace {

// Contiguous product, 16-byte loads and stores: each thread moves float4s in a grid-stride loop.
__global__ void mul_vec4_kernel(float4* __restrict__ out, const float4* __restrict__ a,
                                const float4* __restrict__ b, int64_t n4) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n4;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float4 x = __ldg(a + i), y = __ldg(b + i);
    out[i] = make_float4(x.x * y.x, x.y * y.y, x.z * y.z, x.w * y.w);
  }
}

__global__ void mul_scalar_kernel(float* __restrict__ out, const float* __restrict__ a,
                                  const float* __restrict__ b, int64_t begin, int64_t n) {
  for (int64_t i = begin + blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = a[i] * b[i];
}

template <typename Index>
__global__ void mul_broadcast_kernel(float* __restrict__ out, const float* __restrict__ a,
                                     const float* __restrict__ b,
                                     const __grid_constant__ StridedView<2> view, Index n) {
  for (Index i = blockIdx.x * Index(blockDim.x) + threadIdx.x; i < n;
       i += Index(gridDim.x) * blockDim.x) {
    int64_t off[2];
    view.offsets<Index>(i, off);
    out[i] = __ldg(a + off[0]) * __ldg(b + off[1]);
  }
}

}  // namespace

void mul(float* out, const float* a, const float* b, int64_t n) {
  if (n == 0) return;
  int64_t done = 0;
  if (aligned16(out) && aligned16(a) && aligned16(b) && n >= 4) {
    const int64_t n4 = n / 4;
    // Enough blocks for full occupancy (8 x 256 threads per SM), then grid-stride.
    HG_LAUNCH(grid_for(n4, kBlock, int64_t(sm_count()) * 8), kBlock, 0, stream(), mul_vec4_kernel)(
        reinterpret_cast<float4*>(out), reinterpret_cast<const float4*>(a),
        reinterpret_cast<const float4*>(b), n4);
    CUDA_CHECK_LAUNCH();
    done = n4 * 4;
  }
  if (done < n) {
    HG_LAUNCH(grid_for(n - done), kBlock, 0, stream(), mul_scalar_kernel)(out, a, b, done, n);
    CUDA_CHECK_LAUNCH();
  }
}

void mul_broadcast(float* out, const float* a, const float* b, const StridedView<2>& view) {
  const int64_t n = view.numel();
  if (n == 0) return;
  if (n <= INT32_MAX) {
    HG_LAUNCH(grid_for(n), kBlock, 0, stream(), mul_broadcast_kernel<uint32_t>)(
        out, a, b, view, static_cast<uint32_t>(n));
  } else {
    HG_LAUNCH(grid_for(n), kBlock, 0, stream(), mul_broadcast_kernel<int64_t>)(out, a, b, view, n);
  }
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
