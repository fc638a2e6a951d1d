// Channels-last pooling on the GPU, the CUDA twins of pooling_cpu.cpp's *_nhwc forms: x is
// [N, H, W, C], one thread per element with the channel fastest, so a warp reads and writes 32
// neighbouring channels. Each thread adds in the CPU twin's order: the results are the same bits.
#include "kernels/common.cuh"
#include "kernels/nn/pooling.h"

namespace handgrad::cuda {

namespace {

// One thread per output (n, oy, ox, c): the window's first maximum in scan order; the first NaN
// sticks (the CPU twin's take rule).
__global__ void maxpool_forward_kernel(float* __restrict__ y, int32_t* __restrict__ argmax,
                                       const float* __restrict__ x, Pool2dShape s) {
  const int64_t OH = s.OH(), OW = s.OW(), C = s.C, total = s.N * OH * OW * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, ox = (i / C) % OW, oy = (i / (C * OW)) % OH, n = i / (C * OW * OH);
    float best = 0.f;
    int32_t at = -1;
    const Pool2dShape::Span rows = s.window_rows(oy), cols = s.window_cols(ox);
    for (int64_t iy = rows.begin; iy < rows.end; ++iy)
      for (int64_t ix = cols.begin; ix < cols.end; ++ix) {
        const float v = x[((n * s.H + iy) * s.W + ix) * C + c];
        if (at < 0 || v > best || (v != v && best == best)) {
          best = v;
          at = static_cast<int32_t>(iy * s.W + ix);
        }
      }
    y[i] = best;
    argmax[i] = at;
  }
}

// One thread per input (n, iy, ix, c): it gathers the gradient of every window that chose it
// (at most ceil(R / stride)^2), in output order as the CPU twin scatters: no atomics, same bits.
__global__ void maxpool_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy,
                                        const int32_t* __restrict__ argmax, Pool2dShape s) {
  const int64_t OH = s.OH(), OW = s.OW(), C = s.C, total = s.N * s.H * s.W * C;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < total; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, ix = (i / C) % s.W, iy = (i / (C * s.W)) % s.H, n = i / (C * s.W * s.H);
    const int32_t me = static_cast<int32_t>(iy * s.W + ix);
    // Windows oy with oy*stride - pad <= iy <= oy*stride - pad + R - 1.
    const int64_t oy0 = max(int64_t(0), (iy + s.pad - s.R + s.stride) / s.stride);
    const int64_t oy1 = min(OH - 1, (iy + s.pad) / s.stride);
    const int64_t ox0 = max(int64_t(0), (ix + s.pad - s.R + s.stride) / s.stride);
    const int64_t ox1 = min(OW - 1, (ix + s.pad) / s.stride);
    float g = 0.f;
    for (int64_t oy = oy0; oy <= oy1; ++oy)
      for (int64_t ox = ox0; ox <= ox1; ++ox) {
        const int64_t o = ((n * OH + oy) * OW + ox) * C + c;
        if (argmax[o] == me) g += dy[o];
      }
    dx[i] = g;
  }
}

// One thread per (n, c): the plane summed in order, then divided.
__global__ void gap_forward_kernel(float* __restrict__ y, const float* __restrict__ x, int64_t N, int64_t HW,
                                   int64_t C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * C; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = i % C, n = i / C;
    float sum = 0.f;
    for (int64_t k = 0; k < HW; ++k) sum += x[(n * HW + k) * C + c];
    y[i] = sum / HW;
  }
}

__global__ void gap_backward_kernel(float* __restrict__ dx, const float* __restrict__ dy, int64_t N, int64_t HW,
                                    int64_t C) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < N * HW * C; i += int64_t(gridDim.x) * blockDim.x)
    dx[i] = dy[i / (HW * C) * C + i % C] / HW;
}

}  // namespace

void maxpool2d_forward_nhwc(float* y, int32_t* argmax, const float* x, const Pool2dShape& s) {
  HG_LAUNCH(grid_for(s.N * s.OH() * s.OW() * s.C), kBlock, 0, stream(), maxpool_forward_kernel)(y, argmax, x, s);
  CUDA_CHECK_LAUNCH();
}

void maxpool2d_backward_nhwc(float* dx, const float* dy, const int32_t* argmax, const Pool2dShape& s) {
  HG_LAUNCH(grid_for(s.N * s.H * s.W * s.C), kBlock, 0, stream(), maxpool_backward_kernel)(dx, dy, argmax, s);
  CUDA_CHECK_LAUNCH();
}

void global_avgpool_forward_nhwc(float* y, const float* x, int64_t N, int64_t HW, int64_t C) {
  HG_LAUNCH(grid_for(N * C), kBlock, 0, stream(), gap_forward_kernel)(y, x, N, HW, C);
  CUDA_CHECK_LAUNCH();
}

void global_avgpool_backward_nhwc(float* dx, const float* dy, int64_t N, int64_t HW, int64_t C) {
  HG_LAUNCH(grid_for(N * HW * C), kBlock, 0, stream(), gap_backward_kernel)(dx, dy, N, HW, C);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
