// Tap-exact convolution on the GPU (conv2d_taps.h states the contract): the gathers, scatters and
// fold-backs are our kernels, the products cuBLAS's (handgrad's own GEMM in a SIMT build, where
// cuBLAS does not run). Every kernel writes each output element from one thread, summing in a
// fixed order (the CPU twin's): no atomics, so a step is bit-reproducible and graph-capturable.
#include "kernels/common.cuh"
#include "kernels/einsum/gemm.h"
#include "kernels/nn/conv2d_taps.h"

namespace handgrad::cuda {

namespace {

#define HG_GRID_STRIDE(i, n) \
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < (n); i += int64_t(gridDim.x) * blockDim.x)

// Output pixel p of group g (row-major over its rectangle), and where its tap `tap` reads (only
// for a group with taps).
struct PixelTap {
  int64_t oy, ox, iy, ix;
};
__device__ PixelTap pixel_of(const ConvTapGroup& g, int64_t p) {
  const int64_t width = g.ox1 - g.ox0;
  return {g.oy0 + p / width, g.ox0 + p % width, 0, 0};
}
__device__ PixelTap pixel_tap(const Conv2dShape& s, const ConvTapGroup& g, int64_t p, int64_t tap) {
  const int64_t tw = g.t1 - g.t0;
  PixelTap at = pixel_of(g, p);
  at.iy = at.oy * s.stride - s.pad + g.r0 + tap / tw;
  at.ix = at.ox * s.stride - s.pad + g.t0 + tap % tw;
  return at;
}

// A_g [N*pixels, taps*C] from x (NHWC).
__global__ void gather_im2col_kernel(float* __restrict__ a, const float* __restrict__ x, Conv2dShape s,
                                     ConvTapGroup g) {
  const int64_t taps = g.taps(), pixels = g.pixels();
  HG_GRID_STRIDE(i, s.N * pixels * taps * s.C) {
    const int64_t c = i % s.C, j = i / s.C, row = j / taps, n = row / pixels;
    const PixelTap at = pixel_tap(s, g, row % pixels, j % taps);
    a[i] = x[((n * s.H + at.iy) * s.W + at.ix) * s.C + c];
  }
}

// Y_g [N*pixels, K] rows <-> y (NHWC): kToRows gathers them from y, otherwise scatters them into y.
template <bool kToRows>
__global__ void move_rows_kernel(float* __restrict__ rows, float* __restrict__ y, Conv2dShape s, ConvTapGroup g) {
  const int64_t pixels = g.pixels();
  HG_GRID_STRIDE(i, s.N * pixels * s.K) {
    const int64_t k = i % s.K, row = i / s.K, n = row / pixels;
    const PixelTap at = pixel_of(g, row % pixels);
    float* p = y + ((n * s.OH() + at.oy) * s.OW() + at.ox) * s.K + k;
    if (kToRows)
      rows[i] = *p;
    else
      *p = rows[i];
  }
}

// dx += group g's dA_g, one thread per dx element: it sums the group's pixels whose window holds
// it, in pixel order (as the CPU twin adds them).
__global__ void col2im_add_kernel(float* __restrict__ dx, const float* __restrict__ da, Conv2dShape s,
                                  ConvTapGroup g) {
  const int64_t width = g.ox1 - g.ox0, tw = g.t1 - g.t0, taps = g.taps(), pixels = g.pixels();
  HG_GRID_STRIDE(i, s.N * s.H * s.W * s.C) {
    const int64_t c = i % s.C, ix = (i / s.C) % s.W, iy = (i / (s.C * s.W)) % s.H, n = i / (s.C * s.W * s.H);
    float sum = dx[i];
    for (int64_t oy = g.oy0; oy < g.oy1; ++oy) {
      const int64_t r = iy + s.pad - oy * s.stride;
      if (r < g.r0 || r >= g.r1) continue;
      for (int64_t ox = g.ox0; ox < g.ox1; ++ox) {
        const int64_t t = ix + s.pad - ox * s.stride;
        if (t < g.t0 || t >= g.t1) continue;
        const int64_t row = n * pixels + (oy - g.oy0) * width + (ox - g.ox0);
        sum += da[(row * taps + (r - g.r0) * tw + (t - g.t0)) * s.C + c];
      }
    }
    dx[i] = sum;
  }
}

// W_g [K, taps*C] from w [K, C, R, S] (kPack), or dw += dW_g (otherwise; each dw element once).
template <bool kPack>
__global__ void group_weights_kernel(float* __restrict__ wg, float* __restrict__ w, Conv2dShape s, ConvTapGroup g) {
  const int64_t taps = g.taps(), tw = g.t1 - g.t0;
  HG_GRID_STRIDE(i, s.K * taps * s.C) {
    const int64_t c = i % s.C, tap = (i / s.C) % taps, k = i / (s.C * taps);
    float* p = w + ((k * s.C + c) * s.R + g.r0 + tap / tw) * s.S + g.t0 + tap % tw;
    if (kPack)
      wg[i] = *p;
    else
      *p += wg[i];
  }
}

// The dense case: M [OP*K, P*C] from w, and dw from dM (each tap summed over its pixel pairs in
// output-pixel order).
__global__ void dense_pack_kernel(float* __restrict__ m, const float* __restrict__ w, Conv2dShape s) {
  const int64_t P = s.H * s.W;
  HG_GRID_STRIDE(i, s.OH() * s.OW() * s.K * P * s.C) {
    const int64_t c = i % s.C, q = (i / s.C) % P, k = (i / (s.C * P)) % s.K, p = i / (s.C * P * s.K);
    const int64_t r = q / s.W - (p / s.OW()) * s.stride + s.pad, t = q % s.W - (p % s.OW()) * s.stride + s.pad;
    m[i] = w[((k * s.C + c) * s.R + r) * s.S + t];
  }
}
__global__ void dense_fold_kernel(float* __restrict__ dw, const float* __restrict__ dm, Conv2dShape s) {
  const int64_t P = s.H * s.W, OP = s.OH() * s.OW();
  HG_GRID_STRIDE(i, s.K * s.C * s.R * s.S) {
    const int64_t t = i % s.S, r = (i / s.S) % s.R, c = (i / (s.S * s.R)) % s.C, k = i / (s.S * s.R * s.C);
    float sum = 0.f;
    for (int64_t p = 0; p < OP; ++p) {
      const int64_t qh = (p / s.OW()) * s.stride - s.pad + r, qw = (p % s.OW()) * s.stride - s.pad + t;
      if (qh < 0 || qh >= s.H || qw < 0 || qw >= s.W) continue;
      sum += dm[(p * s.K + k) * P * s.C + (qh * s.W + qw) * s.C + c];
    }
    dw[i] = sum;
  }
}

void gemm(float* c, const float* a, const float* b, const GemmShape& g) {
#ifdef HANDGRAD_SIMT
  gemm_batched(c, a, b, g);
#else
  gemm_batched_cublas(c, a, b, g);
#endif
}

// A grid-stride kernel over n elements, on handgrad's stream (nothing for n = 0).
#define HG_LAUNCH_OVER(n, kernel, ...)                                        \
  do {                                                                        \
    if ((n) > 0) {                                                            \
      HG_LAUNCH(grid_for(n), kBlock, 0, stream(), kernel)(__VA_ARGS__);       \
      CUDA_CHECK_LAUNCH();                                                    \
    }                                                                         \
  } while (0)

int64_t in_row(const Conv2dShape& s) { return s.H * s.W * s.C; }
int64_t out_row(const Conv2dShape& s) { return s.OH() * s.OW() * s.K; }

}  // namespace

void conv2d_taps_pack_weights(float* packed, const float* w, const Conv2dShape& s) {
  if (conv2d_is_dense_gemm(s)) {
    HG_LAUNCH_OVER(out_row(s) * in_row(s), dense_pack_kernel, packed, w, s);
    return;
  }
  for (const ConvTapLayout::At& at : conv2d_tap_layout(s).groups)
    HG_LAUNCH_OVER(s.K * at.g.taps() * s.C, group_weights_kernel<true>, packed + at.w, const_cast<float*>(w), s, at.g);
}

void conv2d_taps_forward(float* y, const float* x, const float* packed, const Conv2dShape& s, float* ws,
                         float* keep_im2col) {
  GemmShape g;
  if (conv2d_is_dense_gemm(s)) {  // Y [N, OP*K] = X [N, P*C] . M^T
    g.M = s.N, g.N = out_row(s), g.K = in_row(s), g.trans_b = true, g.lda = in_row(s), g.ldb = in_row(s);
    return gemm(y, x, packed, g);
  }
  const ConvTapLayout l = conv2d_tap_layout(s);
  float *a = keep_im2col ? keep_im2col : ws, *rows = ws + l.a_floats;
  for (const ConvTapLayout::At& at : l.groups) {
    const int64_t k = at.g.taps() * s.C, m = s.N * at.g.pixels();
    if (k == 0) {  // no tap in the image: the output is 0
      CUDA_CHECK(cudaMemsetAsync(rows + at.y, 0, sizeof(float) * m * s.K, stream()));
    } else {
      HG_LAUNCH_OVER(m * k, gather_im2col_kernel, a + at.a, x, s, at.g);
      g = GemmShape{};  // Y_g [N*pixels, K] = A_g . W_g^T
      g.M = m, g.N = s.K, g.K = k, g.trans_b = true, g.lda = k, g.ldb = k;
      gemm(rows + at.y, a + at.a, packed + at.w, g);
    }
    HG_LAUNCH_OVER(m * s.K, move_rows_kernel<false>, rows + at.y, y, s, at.g);
  }
}

void conv2d_taps_backward_data(float* dx, const float* dy, const float* packed, const Conv2dShape& s, float* ws) {
  GemmShape g;
  if (conv2d_is_dense_gemm(s)) {  // dX [N, P*C] = dY [N, OP*K] . M
    g.M = s.N, g.N = in_row(s), g.K = out_row(s), g.lda = out_row(s), g.ldb = in_row(s);
    return gemm(dx, dy, packed, g);
  }
  const ConvTapLayout l = conv2d_tap_layout(s);
  float *da = ws, *rows = ws + l.a_floats;
  CUDA_CHECK(cudaMemsetAsync(dx, 0, sizeof(float) * s.N * in_row(s), stream()));
  for (const ConvTapLayout::At& at : l.groups) {
    const int64_t k = at.g.taps() * s.C, m = s.N * at.g.pixels();
    if (k == 0) continue;  // no tap in the image: nothing flows back
    HG_LAUNCH_OVER(m * s.K, move_rows_kernel<true>, rows + at.y, const_cast<float*>(dy), s, at.g);
    g = GemmShape{};  // dA_g [N*pixels, taps*C] = dY_g . W_g
    g.M = m, g.N = k, g.K = s.K, g.lda = s.K, g.ldb = k;
    gemm(da + at.a, rows + at.y, packed + at.w, g);
    HG_LAUNCH_OVER(s.N * in_row(s), col2im_add_kernel, dx, da + at.a, s, at.g);
  }
}

void conv2d_taps_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* ws,
                                 const float* kept_im2col) {
  GemmShape g;
  if (conv2d_is_dense_gemm(s)) {  // dM [OP*K, P*C] = dY^T . X, folded into dw
    g.M = out_row(s), g.N = in_row(s), g.K = s.N, g.trans_a = true, g.lda = out_row(s), g.ldb = in_row(s);
    gemm(ws, dy, x, g);
    HG_LAUNCH_OVER(s.K * s.C * s.R * s.S, dense_fold_kernel, dw, ws, s);
    return;
  }
  const ConvTapLayout l = conv2d_tap_layout(s);
  float *rows = ws + l.a_floats, *dwg = rows + l.y_floats;
  const float* a = kept_im2col ? kept_im2col : ws;
  CUDA_CHECK(cudaMemsetAsync(dw, 0, sizeof(float) * s.K * s.C * s.R * s.S, stream()));  // padding's taps: 0
  for (const ConvTapLayout::At& at : l.groups) {
    const int64_t k = at.g.taps() * s.C, m = s.N * at.g.pixels();
    if (k == 0) continue;
    if (!kept_im2col) HG_LAUNCH_OVER(m * k, gather_im2col_kernel, ws + at.a, x, s, at.g);
    HG_LAUNCH_OVER(m * s.K, move_rows_kernel<true>, rows + at.y, const_cast<float*>(dy), s, at.g);
    g = GemmShape{};  // dW_g [K, taps*C] = dY_g^T . A_g
    g.M = s.K, g.N = k, g.K = m, g.trans_a = true, g.lda = s.K, g.ldb = k;
    gemm(dwg + at.w, rows + at.y, a + at.a, g);
    HG_LAUNCH_OVER(s.K * k, group_weights_kernel<false>, dwg + at.w, dw, s, at.g);
  }
}

}  // namespace handgrad::cuda
