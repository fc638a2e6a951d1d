#include "kernels/common.cuh"
#include "kernels/nn/pooling.h"

namespace handgrad::cuda {

namespace {

// One thread per output: the window's first maximum (NaN wins, as in the CPU twin).
__global__ void maxpool_forward_kernel(float* __restrict__ y, int32_t* __restrict__ argmax,
                                       const float* __restrict__ x, Pool2dShape s) {
  const int64_t OH = s.OH(), OW = s.OW(), total = s.N * s.C * OH * OW;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ox = i % OW, oy = (i / OW) % OH, nc = i / (OW * OH);
    const float* in = x + nc * s.H * s.W;
    float best = -INFINITY;
    int32_t at = -1;
    const Pool2dShape::Span rows = s.window_rows(oy), cols = s.window_cols(ox);
    for (int64_t iy = rows.begin; iy < rows.end; ++iy) {
      for (int64_t ix = cols.begin; ix < cols.end; ++ix) {
        const float v = in[iy * s.W + ix];
        if (at < 0 || v > best || (v != v && best == best)) {
          best = v;
          at = static_cast<int32_t>(iy * s.W + ix);
        }
      }
    }
    y[i] = best;
    argmax[i] = at;
  }
}

// One thread per input pixel: it gathers the gradient of every window that chose it (at most
// ceil(R / stride)^2 of them), so no atomics and the result is deterministic.
__global__ void maxpool_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                        const int32_t* __restrict__ argmax, Pool2dShape s) {
  const int64_t OH = s.OH(), OW = s.OW(), total = s.N * s.C * s.H * s.W;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ix = i % s.W, iy = (i / s.W) % s.H, nc = i / (s.W * s.H);
    const int32_t me = static_cast<int32_t>(iy * s.W + ix);
    // Windows oy with oy*stride - pad <= iy <= oy*stride - pad + R - 1.
    const int64_t oy0 = max(int64_t(0), (iy + s.pad - s.R + s.stride) / s.stride);
    const int64_t oy1 = min(OH - 1, (iy + s.pad) / s.stride);
    const int64_t ox0 = max(int64_t(0), (ix + s.pad - s.R + s.stride) / s.stride);
    const int64_t ox1 = min(OW - 1, (ix + s.pad) / s.stride);
    float g = 0.f;
    for (int64_t oy = oy0; oy <= oy1; ++oy)
      for (int64_t ox = ox0; ox <= ox1; ++ox) {
        const int64_t o = (nc * OH + oy) * OW + ox;
        if (argmax[o] == me) g += dy[o];
      }
    dx[i] = g;
  }
}

__global__ void gap_forward_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t NC, int64_t HW) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < NC; i += int64_t(gridDim.x) * blockDim.x) {
    float sum = 0.f;
    for (int64_t k = 0; k < HW; ++k) sum += x[i * HW + k];
    y[i] = sum / HW;
  }
}

__global__ void gap_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy, int64_t NC, int64_t HW) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < NC * HW; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dy[i / HW] / HW;
}

}  // namespace

void maxpool2d_forward(float* y, int32_t* argmax, const float* x, const Pool2dShape& s) {
  maxpool_forward_kernel<<<grid_for(s.N * s.C * s.OH() * s.OW()), kBlock, 0, stream()>>>(y, argmax, x, s);
  CUDA_CHECK_LAUNCH();
}

void maxpool2d_backward(float* dx, const float* dy, const int32_t* argmax, const Pool2dShape& s) {
  maxpool_backward_kernel<<<grid_for(s.N * s.C * s.H * s.W), kBlock, 0, stream()>>>(dx, dy, argmax, s);
  CUDA_CHECK_LAUNCH();
}

void global_avgpool_forward(float* y, const float* x, int64_t NC, int64_t HW) {
  gap_forward_kernel<<<grid_for(NC), kBlock, 0, stream()>>>(y, x, NC, HW);
  CUDA_CHECK_LAUNCH();
}

void global_avgpool_backward(float* dx, const float* dy, int64_t NC, int64_t HW) {
  gap_backward_kernel<<<grid_for(NC * HW), kBlock, 0, stream()>>>(dx, dy, NC, HW);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
