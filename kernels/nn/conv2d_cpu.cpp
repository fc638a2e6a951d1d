#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/einsum/gemm.h"
#include "kernels/nn/conv2d.h"

namespace handgrad::cpu {

// Batched im2col: the columns of all N images side by side, col [C*R*S, N*P] (P = OH*OW), so
// each convolution is ONE large GEMM. Per-image GEMMs were dominated by OpenBLAS's packing on
// ResNet's deep layers, where P is 4 or 1.

namespace {

// Image n's columns: col[(c*R + r)*S + s][n*P + oy*OW + ox] = x[c, oy*st - p + r, ox*st - p + s].
void im2col(float* col, int64_t ld, const float* x, const Conv2dShape& sh) {
  const int64_t OH = sh.OH(), OW = sh.OW();
  for (int64_t c = 0; c < sh.C; ++c)
    for (int64_t r = 0; r < sh.R; ++r)
      for (int64_t s = 0; s < sh.S; ++s) {
        float* row = col + ((c * sh.R + r) * sh.S + s) * ld;
        for (int64_t oy = 0; oy < OH; ++oy) {
          const int64_t iy = oy * sh.stride - sh.pad + r;
          float* out = row + oy * OW;
          if (iy < 0 || iy >= sh.H) {
            std::memset(out, 0, sizeof(float) * OW);
            continue;
          }
          const float* in = x + (c * sh.H + iy) * sh.W;
          for (int64_t ox = 0; ox < OW; ++ox) {
            const int64_t ix = ox * sh.stride - sh.pad + s;
            out[ox] = (ix >= 0 && ix < sh.W) ? in[ix] : 0.f;
          }
        }
      }
}

// The adjoint of im2col for one image: dx[c, iy, ix] += col[...] (dx zeroed here).
void col2im(float* dx, const float* col, int64_t ld, const Conv2dShape& sh) {
  const int64_t OH = sh.OH(), OW = sh.OW();
  std::memset(dx, 0, sizeof(float) * sh.C * sh.H * sh.W);
  for (int64_t c = 0; c < sh.C; ++c)
    for (int64_t r = 0; r < sh.R; ++r)
      for (int64_t s = 0; s < sh.S; ++s) {
        const float* row = col + ((c * sh.R + r) * sh.S + s) * ld;
        for (int64_t oy = 0; oy < OH; ++oy) {
          const int64_t iy = oy * sh.stride - sh.pad + r;
          if (iy < 0 || iy >= sh.H) continue;
          float* out = dx + (c * sh.H + iy) * sh.W;
          const float* in = row + oy * OW;
          for (int64_t ox = 0; ox < OW; ++ox) {
            const int64_t ix = ox * sh.stride - sh.pad + s;
            if (ix >= 0 && ix < sh.W) out[ix] += in[ox];
          }
        }
      }
}

int64_t kk(const Conv2dShape& s) { return s.C * s.R * s.S; }
int64_t plane(const Conv2dShape& s) { return s.OH() * s.OW(); }

// [A, B, P] -> [B, A, P] (swap the two outer axes of P-long rows).
void swap_outer(float* dst, const float* src, int64_t A, int64_t B, int64_t P) {
#pragma omp parallel for collapse(2) schedule(static) if (A * B * P > (1 << 15))
  for (int64_t a = 0; a < A; ++a)
    for (int64_t b = 0; b < B; ++b) std::memcpy(dst + (b * A + a) * P, src + (a * B + b) * P, sizeof(float) * P);
}

void all_im2col(float* col, const float* x, const Conv2dShape& s) {
  const int64_t ld = s.N * plane(s);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n) im2col(col + n * plane(s), ld, x + n * s.C * s.H * s.W, s);
}

}  // namespace

int64_t conv2d_workspace_floats(const Conv2dShape& s) {
  // The batch's columns [KK, N*P], and the output (or its gradient) as [K, N*P].
  return s.N * plane(s) * (kk(s) + s.K);
}

void conv2d_forward(float* y, const float* x, const float* w, const Conv2dShape& s, float* ws) {
  const int64_t NP = s.N * plane(s);
  float* col = ws;
  float* out = ws + kk(s) * NP;
  all_im2col(col, x, s);
  GemmShape g;  // out [K, N*P] = w [K, KK] x col [KK, N*P]
  g.M = s.K, g.N = NP, g.K = kk(s), g.lda = kk(s), g.ldb = NP;
  gemm_batched(out, w, col, g);
  swap_outer(y, out, s.K, s.N, plane(s));
}

void conv2d_backward_data(float* dx, const float* dy, const float* w, const Conv2dShape& s, float* ws) {
  const int64_t NP = s.N * plane(s);
  float* col = ws;
  float* dyt = ws + kk(s) * NP;
  swap_outer(dyt, dy, s.N, s.K, plane(s));
  GemmShape g;  // col [KK, N*P] = w^T [KK, K] x dy [K, N*P]
  g.M = kk(s), g.N = NP, g.K = s.K, g.trans_a = true, g.lda = kk(s), g.ldb = NP;
  gemm_batched(col, w, dyt, g);
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n) col2im(dx + n * s.C * s.H * s.W, col + n * plane(s), NP, s);
}

void conv2d_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* ws) {
  const int64_t NP = s.N * plane(s);
  float* col = ws;
  float* dyt = ws + kk(s) * NP;
  all_im2col(col, x, s);
  swap_outer(dyt, dy, s.N, s.K, plane(s));
  GemmShape g;  // dw [K, KK] = dy [K, N*P] x col^T [N*P, KK]
  g.M = s.K, g.N = kk(s), g.K = NP, g.trans_b = true, g.lda = NP, g.ldb = NP;
  gemm_batched(dw, dyt, col, g);
}

}  // namespace handgrad::cpu
