// Tap-exact convolution on the CPU (conv2d_taps.h states the contract): gathers and scatters here,
// the products in the project's GEMM (oneDNN / OpenBLAS by size).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/einsum/gemm.h"
#include "kernels/nn/conv2d_taps.h"

namespace handgrad::cpu {

namespace {

// ---- The dense GEMM: every output pixel's window covers the image ------------------------------

int64_t in_row(const Conv2dShape& s) { return s.H * s.W * s.C; }      // floats of one image
int64_t out_row(const Conv2dShape& s) { return s.OH() * s.OW() * s.K; }  // floats of one output

// Backward filter's last step: writes dw [K, C, R, S] from the products' rows of tap gradients.
// Each output channel's taps are summed in an [R*S][C] accumulator (a few KB: L1), where the
// channels are contiguous so the adds vectorise, then written once, transposed into dw's
// [C][R][S]; the taps that land inside the image for no output pixel (they touch only padding)
// are exact zeros, written without passing through the accumulator (a 1x1 map uses 1 tap of 9).
// add_taps(k, acc) adds output channel k's gradients: acc[(r*S + t)*C + c] += ...
template <class AddTaps>
void fold_into_kcrs(float* dw, const Conv2dShape& s, AddTaps add_taps) {
  const int64_t taps = s.R * s.S;
  std::vector<bool> row_used(s.R, false), col_used(s.S, false);
  for (const ConvTapRun& run : conv2d_tap_runs(s.OH(), s.H, s.R, s.stride, s.pad))
    for (int64_t r = run.r0; r < run.r1; ++r) row_used[r] = true;
  for (const ConvTapRun& run : conv2d_tap_runs(s.OW(), s.W, s.S, s.stride, s.pad))
    for (int64_t t = run.r0; t < run.r1; ++t) col_used[t] = true;
  std::vector<int64_t> used;  // r*S + t
  for (int64_t rt = 0; rt < taps; ++rt)
    if (row_used[rt / s.S] && col_used[rt % s.S]) used.push_back(rt);
  const bool all = static_cast<int64_t>(used.size()) == taps;
#pragma omp parallel
  {
    std::vector<float> acc(taps * s.C);
#pragma omp for schedule(static)
    for (int64_t k = 0; k < s.K; ++k) {
      for (const int64_t rt : used) std::fill_n(acc.data() + rt * s.C, s.C, 0.f);
      add_taps(k, acc.data());
      float* d = dw + k * s.C * taps;
      if (!all) std::fill_n(d, s.C * taps, 0.f);
      for (const int64_t rt : used)
        for (int64_t c = 0; c < s.C; ++c) d[c * taps + rt] = acc[rt * s.C + c];
    }
  }
}

// acc[0, C) += src[0, C)
inline void add_row(float* acc, const float* src, int64_t C) {
#pragma omp simd
  for (int64_t c = 0; c < C; ++c) acc[c] += src[c];
}

// Calls f(p, q, r, t) for every (output pixel p, input pixel q) pair and the tap (r, t) joining them.
template <class F>
void for_each_pair(const Conv2dShape& s, F f) {
  for (int64_t ph = 0; ph < s.OH(); ++ph)
    for (int64_t pw = 0; pw < s.OW(); ++pw)
      for (int64_t qh = 0; qh < s.H; ++qh)
        for (int64_t qw = 0; qw < s.W; ++qw)
          f(ph * s.OW() + pw, qh * s.W + qw, qh - ph * s.stride + s.pad, qw - pw * s.stride + s.pad);
}

// Both fold loops run output channel by output channel (threads split them): one k's weights,
// C*R*S floats, stay in L1 while the taps are scattered into them.
void dense_pack(float* m, const float* w, const Conv2dShape& s) {
  const int64_t row = in_row(s);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < s.K; ++k)
    for_each_pair(s, [&](int64_t p, int64_t q, int64_t r, int64_t t) {
      float* dst = m + (p * s.K + k) * row + q * s.C;
      const float* src = w + (k * s.C * s.R + r) * s.S + t;  // w[k][c][r][t], c = 0
      for (int64_t c = 0; c < s.C; ++c) dst[c] = src[c * s.R * s.S];
    });
}

void dense_forward(float* y, const float* x, const float* m, const Conv2dShape& s) {
  GemmShape g;  // Y [N, OP*K] = X [N, P*C] . M^T
  g.M = s.N, g.N = out_row(s), g.K = in_row(s), g.trans_b = true, g.lda = in_row(s), g.ldb = in_row(s);
  gemm_batched(y, x, m, g);
}

void dense_backward_data(float* dx, const float* dy, const float* m, const Conv2dShape& s) {
  GemmShape g;  // dX [N, P*C] = dY [N, OP*K] . M [OP*K, P*C]
  g.M = s.N, g.N = in_row(s), g.K = out_row(s), g.lda = out_row(s), g.ldb = in_row(s);
  gemm_batched(dx, dy, m, g);
}

void dense_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* dm) {
  GemmShape g;  // dM [OP*K, P*C] = dY^T . X
  g.M = out_row(s), g.N = in_row(s), g.K = s.N, g.trans_a = true, g.lda = out_row(s), g.ldb = in_row(s);
  gemm_batched(dm, dy, x, g);
  const int64_t row = in_row(s);
  fold_into_kcrs(dw, s, [&](int64_t k, float* acc) {
    for_each_pair(s, [&](int64_t p, int64_t q, int64_t r, int64_t t) {
      add_row(acc + (r * s.S + t) * s.C, dm + (p * s.K + k) * row + q * s.C, s.C);
    });
  });
}

// ---- Groups of output pixels, one GEMM each ------------------------------------------------------

using Layout = ConvTapLayout;
using GroupAt = ConvTapLayout::At;

// Visits every (group, image, output pixel) row: f(group, row of the group, n, oy, ox). Images
// are spread over threads; each image's rows stay on one thread (so scatter-adds into dx are safe).
template <class F>
void for_each_row(const Conv2dShape& s, const Layout& l, F f) {
#pragma omp parallel for schedule(static) if (s.N > 1)
  for (int64_t n = 0; n < s.N; ++n)
    for (const GroupAt& at : l.groups) {
      const ConvTapGroup& g = at.g;
      int64_t row = n * g.pixels();
      for (int64_t oy = g.oy0; oy < g.oy1; ++oy)
        for (int64_t ox = g.ox0; ox < g.ox1; ++ox) f(at, row++, n, oy, ox);
    }
}

// The input pixel that tap (r, t) of output pixel (oy, ox) reads, as a pointer into NHWC x.
template <class T>
T* input_at(T* x, const Conv2dShape& s, int64_t n, int64_t oy, int64_t ox, int64_t r, int64_t t) {
  return x + ((n * s.H + oy * s.stride - s.pad + r) * s.W + ox * s.stride - s.pad + t) * s.C;
}

void gather_im2col(float* a, const float* x, const Conv2dShape& s, const Layout& l) {
  for_each_row(s, l, [&](const GroupAt& at, int64_t row, int64_t n, int64_t oy, int64_t ox) {
    const ConvTapGroup& g = at.g;
    float* dst = a + at.a + row * g.taps() * s.C;
    for (int64_t r = g.r0; r < g.r1; ++r)
      for (int64_t t = g.t0; t < g.t1; ++t, dst += s.C)
        std::memcpy(dst, input_at(x, s, n, oy, ox, r, t), sizeof(float) * s.C);
  });
}

// Y_g rows <-> y (NHWC): to_rows gathers dy's rows, otherwise the rows are scattered into y.
void move_rows(float* rows, float* y, const Conv2dShape& s, const Layout& l, bool to_rows) {
  for_each_row(s, l, [&](const GroupAt& at, int64_t row, int64_t n, int64_t oy, int64_t ox) {
    float* r = rows + at.y + row * s.K;
    float* p = y + ((n * s.OH() + oy) * s.OW() + ox) * s.K;
    if (to_rows)
      std::memcpy(r, p, sizeof(float) * s.K);
    else
      std::memcpy(p, r, sizeof(float) * s.K);
  });
}

void group_pack(float* packed, const float* w, const Conv2dShape& s) {
  const Layout l = conv2d_tap_layout(s);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < s.K; ++k)
    for (const GroupAt& at : l.groups) {
      const ConvTapGroup& g = at.g;
      float* dst = packed + at.w + k * g.taps() * s.C;
      for (int64_t r = g.r0; r < g.r1; ++r)
        for (int64_t t = g.t0; t < g.t1; ++t)
          for (int64_t c = 0; c < s.C; ++c) *dst++ = w[((k * s.C + c) * s.R + r) * s.S + t];
    }
}

void group_forward(float* y, const float* x, const float* packed, const Conv2dShape& s, float* ws, float* keep) {
  const Layout l = conv2d_tap_layout(s);
  float* a = keep ? keep : ws;
  float* rows = ws + l.a_floats;
  gather_im2col(a, x, s, l);
  for (const GroupAt& at : l.groups) {
    const int64_t k = at.g.taps() * s.C;
    GemmShape g;  // Y_g [N*pixels, K] = A_g . W_g^T
    g.M = s.N * at.g.pixels(), g.N = s.K, g.K = k, g.trans_b = true, g.lda = std::max<int64_t>(k, 1),
    g.ldb = g.lda;
    gemm_batched(rows + at.y, a + at.a, packed + at.w, g);
  }
  move_rows(rows, y, s, l, false);
}

void group_backward_data(float* dx, const float* dy, const float* packed, const Conv2dShape& s, float* ws) {
  const Layout l = conv2d_tap_layout(s);
  float* da = ws;
  float* rows = ws + l.a_floats;
  move_rows(rows, const_cast<float*>(dy), s, l, true);  // reads dy only
  for (const GroupAt& at : l.groups) {
    const int64_t k = at.g.taps() * s.C;
    if (k == 0) continue;  // no tap in the image: nothing flows back
    GemmShape g;           // dA_g [N*pixels, taps*C] = dY_g . W_g
    g.M = s.N * at.g.pixels(), g.N = k, g.K = s.K, g.lda = s.K, g.ldb = k;
    gemm_batched(da + at.a, rows + at.y, packed + at.w, g);
  }
  std::fill(dx, dx + s.N * s.H * s.W * s.C, 0.f);
  for_each_row(s, l, [&](const GroupAt& at, int64_t row, int64_t n, int64_t oy, int64_t ox) {
    const ConvTapGroup& g = at.g;
    const float* src = da + at.a + row * g.taps() * s.C;
    for (int64_t r = g.r0; r < g.r1; ++r)
      for (int64_t t = g.t0; t < g.t1; ++t, src += s.C) {
        float* dst = input_at(dx, s, n, oy, ox, r, t);
        for (int64_t c = 0; c < s.C; ++c) dst[c] += src[c];
      }
  });
}

void group_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* ws,
                           const float* kept) {
  const Layout l = conv2d_tap_layout(s);
  float* rows = ws + l.a_floats;
  float* dwg = rows + l.y_floats;
  const float* a = kept;
  if (!kept) {
    gather_im2col(ws, x, s, l);
    a = ws;
  }
  move_rows(rows, const_cast<float*>(dy), s, l, true);
  for (const GroupAt& at : l.groups) {
    const ConvTapGroup& gr = at.g;
    const int64_t k = gr.taps() * s.C;
    if (k == 0) continue;
    GemmShape g;  // dW_g [K, taps*C] = dY_g^T . A_g
    g.M = s.K, g.N = k, g.K = s.N * gr.pixels(), g.trans_a = true, g.lda = s.K, g.ldb = k;
    gemm_batched(dwg + at.w, rows + at.y, a + at.a, g);
  }
  fold_into_kcrs(dw, s, [&](int64_t k, float* acc) {
    for (const GroupAt& at : l.groups) {
      const ConvTapGroup& gr = at.g;
      const float* src = dwg + at.w + k * gr.taps() * s.C;
      for (int64_t r = gr.r0; r < gr.r1; ++r)
        for (int64_t t = gr.t0; t < gr.t1; ++t, src += s.C) add_row(acc + (r * s.S + t) * s.C, src, s.C);
    }
  });
}

}  // namespace

void conv2d_taps_pack_weights(float* packed, const float* w, const Conv2dShape& s) {
  if (conv2d_is_dense_gemm(s)) return dense_pack(packed, w, s);
  group_pack(packed, w, s);
}

void conv2d_taps_forward(float* y, const float* x, const float* packed, const Conv2dShape& s, float* ws,
                         float* keep_im2col) {
  if (conv2d_is_dense_gemm(s)) return dense_forward(y, x, packed, s);
  group_forward(y, x, packed, s, ws, keep_im2col);
}

void conv2d_taps_backward_data(float* dx, const float* dy, const float* packed, const Conv2dShape& s, float* ws) {
  if (conv2d_is_dense_gemm(s)) return dense_backward_data(dx, dy, packed, s);
  group_backward_data(dx, dy, packed, s, ws);
}

void conv2d_taps_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* ws,
                                 const float* kept_im2col) {
  if (conv2d_is_dense_gemm(s)) return dense_backward_filter(dw, dy, x, s, ws);
  group_backward_filter(dw, dy, x, s, ws, kept_im2col);
}

}  // namespace handgrad::cpu
