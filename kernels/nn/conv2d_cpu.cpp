#include <omp.h>

#include <algorithm>
#include <cstring>

#include "kernels/einsum/gemm.h"
#include "kernels/nn/conv2d.h"

namespace handgrad::cpu {

namespace {

// col[(c*R + r)*S + s][oy*OW + ox] = x[c, oy*stride - pad + r, ox*stride - pad + s] (0 outside).
void im2col(float* col, const float* x, const Conv2dShape& sh) {
  const int64_t OH = sh.OH(), OW = sh.OW();
  for (int64_t c = 0; c < sh.C; ++c)
    for (int64_t r = 0; r < sh.R; ++r)
      for (int64_t s = 0; s < sh.S; ++s) {
        float* row = col + ((c * sh.R + r) * sh.S + s) * OH * OW;
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

// The adjoint of im2col: dx[c, iy, ix] += col[...] (dx zeroed by the caller).
void col2im(float* dx, const float* col, const Conv2dShape& sh) {
  const int64_t OH = sh.OH(), OW = sh.OW();
  for (int64_t c = 0; c < sh.C; ++c)
    for (int64_t r = 0; r < sh.R; ++r)
      for (int64_t s = 0; s < sh.S; ++s) {
        const float* row = col + ((c * sh.R + r) * sh.S + s) * OH * OW;
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

int64_t col_floats(const Conv2dShape& s) { return s.C * s.R * s.S * s.OH() * s.OW(); }

// A GEMM on the calling thread: C (M x N) = op(A) op(B), leading dims from the shape.
void gemm(float* C, const float* A, bool ta, const float* B, bool tb, int64_t M, int64_t N, int64_t K) {
  GemmShape g;
  g.M = M, g.N = N, g.K = K, g.trans_a = ta, g.trans_b = tb;
  g.lda = ta ? M : K;
  g.ldb = tb ? K : N;
  gemm_batched(C, A, B, g);
}

}  // namespace

// Per thread: an im2col buffer, then (for the filter gradient) a partial dw and one image's dw.
int64_t per_thread_floats(const Conv2dShape& s) { return col_floats(s) + 2 * s.K * s.C * s.R * s.S; }

int64_t conv2d_workspace_floats(const Conv2dShape& s) {
  return int64_t(omp_get_max_threads()) * per_thread_floats(s);
}

void conv2d_forward(float* y, const float* x, const float* w, const Conv2dShape& s, float* ws) {
  const int64_t P = s.OH() * s.OW(), KK = s.C * s.R * s.S;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n) {
    float* col = ws + omp_get_thread_num() * per_thread_floats(s);
    const bool pointwise = s.R == 1 && s.S == 1 && s.stride == 1 && s.pad == 0;
    const float* b = x + n * s.C * s.H * s.W;
    if (!pointwise) {
      im2col(col, b, s);
      b = col;
    }
    gemm(y + n * s.K * P, w, false, b, false, s.K, P, KK);  // [K, KK] x [KK, P]
  }
}

void conv2d_backward_data(float* dx, const float* dy, const float* w, const Conv2dShape& s, float* ws) {
  const int64_t P = s.OH() * s.OW(), KK = s.C * s.R * s.S;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n) {
    float* col = ws + omp_get_thread_num() * per_thread_floats(s);
    float* dxn = dx + n * s.C * s.H * s.W;
    gemm(col, w, true, dy + n * s.K * P, false, KK, P, s.K);  // [KK, K] x [K, P]
    std::memset(dxn, 0, sizeof(float) * s.C * s.H * s.W);
    col2im(dxn, col, s);
  }
}

void conv2d_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* ws) {
  const int64_t P = s.OH() * s.OW(), KK = s.C * s.R * s.S;
  const int64_t stride_ws = per_thread_floats(s);
  int team = 1;
  // Each thread accumulates its own images' dw; the partials are then added in thread order.
#pragma omp parallel
  {
#pragma omp single
    team = omp_get_num_threads();
    float* col = ws + omp_get_thread_num() * stride_ws;
    float* part = col + col_floats(s);
    float* one = part + s.K * KK;
    std::memset(part, 0, sizeof(float) * s.K * KK);
#pragma omp for schedule(static)
    for (int64_t n = 0; n < s.N; ++n) {
      im2col(col, x + n * s.C * s.H * s.W, s);
      gemm(one, dy + n * s.K * P, false, col, true, s.K, KK, P);  // [K, P] x [P, KK]
#pragma omp simd
      for (int64_t i = 0; i < s.K * KK; ++i) part[i] += one[i];
    }
  }
  std::memset(dw, 0, sizeof(float) * s.K * KK);
  for (int t = 0; t < team; ++t) {
    const float* part = ws + t * stride_ws + col_floats(s);
    for (int64_t i = 0; i < s.K * KK; ++i) dw[i] += part[i];
  }
}

}  // namespace handgrad::cpu
