// Q3's CPU layers against naive float64 loops.
#include <gtest/gtest.h>

#include "kernels/nn/batchnorm.h"
#include "kernels/nn/conv2d.h"
#include "kernels/nn/conv2d_taps.h"
#include "kernels/nn/pooling.h"
#include "kernels/nn/relu.h"
#include "kernels/nn/rows.h"
#include "kernels/nn/xent.h"
#include "kernels/optim/sgd.h"
#include "host/nn.h"
#include "models/resnet18.h"
#include "test_util.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <cstdio>
#include <limits>

using namespace handgrad;
using test::poisoned;
using test::random_tensor;
using test::rel_err;

namespace {
double x_at(const float* x, const Conv2dShape& s, int64_t n, int64_t c, int64_t y, int64_t xx) {
  if (y < 0 || y >= s.H || xx < 0 || xx >= s.W) return 0;
  return x[((n * s.C + c) * s.H + y) * s.W + xx];
}
}  // namespace

TEST(CnnLayers, Conv2dForwardAndBothBackwards) {
  for (Conv2dShape s : {Conv2dShape{2, 3, 9, 7, 4, 3, 3, 1, 1}, Conv2dShape{3, 2, 8, 8, 5, 7, 7, 2, 3},
                        Conv2dShape{16, 8, 4, 4, 6, 3, 3, 2, 1}, Conv2dShape{16, 6, 2, 2, 6, 3, 3, 1, 1},
                        Conv2dShape{5, 4, 5, 5, 3, 1, 1, 2, 0}, Conv2dShape{4, 3, 6, 6, 2, 1, 1, 1, 0},
                        Conv2dShape{16, 256, 2, 2, 256, 3, 3, 1, 1}, Conv2dShape{16, 128, 4, 4, 256, 3, 3, 2, 1}}) {
    const int64_t OH = s.OH(), OW = s.OW();
    Tensor x = random_tensor({s.N, s.C, s.H, s.W}, 1), w = random_tensor({s.K, s.C, s.R, s.S}, 2);
    Tensor dy = random_tensor({s.N, s.K, OH, OW}, 3);
    Tensor ws = Tensor::empty({cpu::conv2d_workspace_floats(s)});
    Tensor y = poisoned({s.N, s.K, OH, OW}), dx = poisoned({s.N, s.C, s.H, s.W}), dw = poisoned({s.K, s.C, s.R, s.S});
    cpu::conv2d_forward(y.data<float>(), x.data<float>(), w.data<float>(), s, ws.data<float>());
    cpu::conv2d_backward_data(dx.data<float>(), dy.data<float>(), w.data<float>(), s, ws.data<float>());
    cpu::conv2d_backward_filter(dw.data<float>(), dy.data<float>(), x.data<float>(), s, ws.data<float>());
    std::vector<double> ry(y.numel(), 0.0), rdx(dx.numel(), 0.0), rdw(dw.numel(), 0.0);
    const float* X = x.data<float>();
    const float* Wt = w.data<float>();
    const float* DY = dy.data<float>();
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t oy = 0; oy < OH; ++oy)
          for (int64_t ox = 0; ox < OW; ++ox) {
            const int64_t yi = ((n * s.K + k) * OH + oy) * OW + ox;
            for (int64_t c = 0; c < s.C; ++c)
              for (int64_t r = 0; r < s.R; ++r)
                for (int64_t q = 0; q < s.S; ++q) {
                  const int64_t iy = oy * s.stride - s.pad + r, ix = ox * s.stride - s.pad + q;
                  const int64_t wi = ((k * s.C + c) * s.R + r) * s.S + q;
                  ry[yi] += Wt[wi] * x_at(X, s, n, c, iy, ix);
                  rdw[wi] += DY[yi] * x_at(X, s, n, c, iy, ix);
                  if (iy >= 0 && iy < s.H && ix >= 0 && ix < s.W) rdx[((n * s.C + c) * s.H + iy) * s.W + ix] += DY[yi] * Wt[wi];
                }
          }
    const std::string what = cat("N=", s.N, " C=", s.C, " H=", s.H, " W=", s.W, " K=", s.K, " R=", s.R,
                                 " stride=", s.stride);
    EXPECT_LT(rel_err(y.to_vector(), ry), 1e-5) << what;
    EXPECT_LT(rel_err(dx.to_vector(), rdx), 1e-5) << what;
    EXPECT_LT(rel_err(dw.to_vector(), rdw), 1e-5) << what;
  }
}

// The ResNet's channels-last layers (x as [rows, C]) against the textbook formulas in double:
// BN statistics and running statistics, BN + ReLU with the residual join or a second BN, eval
// mode, BN backward with and without the ReLU's mask, the residual join's backward, max and
// average pooling, softmax cross-entropy.
TEST(CnnLayers, ChannelsLastLayersAgainstLoops) {
  // C = 20: one full block of 16 channels and a partial one; C = 64 with more rows than a chunk.
  for (auto [rows, C] : {std::pair<int64_t, int64_t>{21, 20}, {36 * 40, 64}, {3, 5}}) {
    const std::string what = cat(rows, "x", C);
    const float eps = kBatchNormEps, mom = kBatchNormMomentum;
    Tensor x = random_tensor({rows, C}, 4), x2 = random_tensor({rows, C}, 12), res = random_tensor({rows, C}, 16);
    Tensor gamma = random_tensor({C}, 5), beta = random_tensor({C}, 6), dy = random_tensor({rows, C}, 7);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += 2.f;  // a mean away from 0
    const std::vector<float> X = x.to_vector(), X2 = x2.to_vector(), R = res.to_vector(), DY = dy.to_vector();
    const std::vector<float> Gm = gamma.to_vector(), Bt = beta.to_vector();
    // Reference statistics of a [rows, C] array, per channel.
    auto stats = [&](const std::vector<float>& v, std::vector<double>& m, std::vector<double>& var) {
      m.assign(C, 0), var.assign(C, 0);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) m[c] += v[r * C + c] / double(rows);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) var[c] += (v[r * C + c] - m[c]) * (v[r * C + c] - m[c]) / double(rows);
    };
    std::vector<double> m, var, m2, var2;
    stats(X, m, var);
    stats(X2, m2, var2);
    Tensor rm = Tensor::zeros({C}), rv = Tensor::full({C}, 1.f), mean = poisoned({C}), inv = poisoned({C});
    cpu::batchnorm_stats_nhwc(mean.data<float>(), inv.data<float>(), rm.data<float>(), rv.data<float>(),
                              x.data<float>(), rows, C, eps, mom, nullptr);
    std::vector<double> rinv(C), rrm(C), rrv(C);
    for (int64_t c = 0; c < C; ++c) {
      rinv[c] = 1 / std::sqrt(var[c] + eps);
      rrm[c] = mom * m[c];
      rrv[c] = (1 - mom) + mom * var[c] * rows / (rows - 1);
    }
    EXPECT_LT(rel_err(mean.to_vector(), m), 1e-6) << what;
    EXPECT_LT(rel_err(inv.to_vector(), rinv), 1e-5) << what;
    EXPECT_LT(rel_err(rm.to_vector(), rrm), 1e-6) << what;
    EXPECT_LT(rel_err(rv.to_vector(), rrv), 1e-5) << what;
    Tensor sc = poisoned({C}), sh = poisoned({C});
    cpu::batchnorm_scale_shift(sc.data<float>(), sh.data<float>(), gamma.data<float>(), beta.data<float>(),
                               mean.data<float>(), inv.data<float>(), C);
    // y = relu(bn(x) + (0 | residual | bn'(x2))), bn' with gamma and beta swapped.
    Tensor sc2 = poisoned({C}), sh2 = poisoned({C}), m2f = Tensor::zeros({C}), i2f = Tensor::zeros({C});
    for (int64_t c = 0; c < C; ++c) m2f.data<float>()[c] = float(m2[c]), i2f.data<float>()[c] = float(1 / std::sqrt(var2[c] + eps));
    cpu::batchnorm_scale_shift(sc2.data<float>(), sh2.data<float>(), beta.data<float>(), gamma.data<float>(),
                               m2f.data<float>(), i2f.data<float>(), C);
    for (int form = 0; form < 3; ++form) {
      Tensor y = poisoned({rows, C});
      cpu::scale_shift_relu_nhwc(y.data<float>(), x.data<float>(), sc.data<float>(), sh.data<float>(),
                                 form == 2 ? x2.data<float>() : nullptr, form == 2 ? sc2.data<float>() : nullptr,
                                 form == 2 ? sh2.data<float>() : nullptr, form == 1 ? res.data<float>() : nullptr, rows, C);
      std::vector<double> want(rows * C);
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t k = r * C + c;
          double v = (X[k] - m[c]) * rinv[c] * Gm[c] + Bt[c];
          if (form == 1) v += R[k];
          if (form == 2) v += (X2[k] - m2[c]) / std::sqrt(var2[c] + eps) * Bt[c] + Gm[c];
          want[k] = std::max(v, 0.0);
        }
      EXPECT_LT(rel_err(y.to_vector(), want), 1e-5) << what << " form " << form;
    }
    // Eval: the running statistics.
    Tensor esc = poisoned({C}), esh = poisoned({C}), ey = poisoned({rows, C});
    cpu::batchnorm_eval_scale_shift(esc.data<float>(), esh.data<float>(), gamma.data<float>(), beta.data<float>(),
                                    rm.data<float>(), rv.data<float>(), C, eps);
    cpu::scale_shift_relu_nhwc(ey.data<float>(), x.data<float>(), esc.data<float>(), esh.data<float>(), nullptr, nullptr,
                               nullptr, nullptr, rows, C);
    std::vector<double> ewant(rows * C);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < C; ++c)
        ewant[r * C + c] = std::max((X[r * C + c] - rrm[c]) / std::sqrt(rrv[c] + eps) * Gm[c] + Bt[c], 0.0);
    EXPECT_LT(rel_err(ey.to_vector(), ewant), 1e-5) << what << " eval";
    // Backward, plain and through the ReLU that follows (dy masked where relu(bn(x)) = 0).
    Tensor relu = poisoned({rows, C});
    cpu::scale_shift_relu_nhwc(relu.data<float>(), x.data<float>(), sc.data<float>(), sh.data<float>(), nullptr, nullptr,
                               nullptr, nullptr, rows, C);
    const std::vector<float> RELU = relu.to_vector();
    for (const bool masked : {false, true}) {
      std::vector<double> g(rows * C), rdx(rows * C), sdy(C, 0), sdyx(C, 0);
      for (int64_t k = 0; k < rows * C; ++k) g[k] = !masked || RELU[k] > 0 ? DY[k] : 0.0;
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) sdy[c] += g[r * C + c], sdyx[c] += g[r * C + c] * (X[r * C + c] - m[c]) * rinv[c];
      for (int64_t r = 0; r < rows; ++r)
        for (int64_t c = 0; c < C; ++c) {
          const int64_t k = r * C + c;
          rdx[k] = Gm[c] * rinv[c] / rows * (rows * g[k] - sdy[c] - (X[k] - m[c]) * rinv[c] * sdyx[c]);
        }
      Tensor dx = poisoned({rows, C}), dg = poisoned({C}), db = poisoned({C});
      cpu::batchnorm_backward_nhwc(dx.data<float>(), dg.data<float>(), db.data<float>(), dy.data<float>(),
                                   masked ? relu.data<float>() : nullptr, x.data<float>(), gamma.data<float>(),
                                   mean.data<float>(), inv.data<float>(), rows, C, nullptr);
      EXPECT_LT(rel_err(dx.to_vector(), rdx), 1e-4) << what << " masked " << masked;
      EXPECT_LT(rel_err(dg.to_vector(), sdyx), 1e-5) << what << " masked " << masked;
      EXPECT_LT(rel_err(db.to_vector(), sdy), 1e-5) << what << " masked " << masked;
    }
    // The residual join's backward: dx += dy * [y > 0], or dx += dy without a ReLU.
    for (const bool masked : {false, true}) {
      Tensor acc = res.clone();
      cpu::add_relu_backward(acc.data<float>(), dy.data<float>(), masked ? relu.data<float>() : nullptr, rows * C);
      std::vector<float> want(rows * C);
      for (int64_t k = 0; k < rows * C; ++k) want[k] = R[k] + (!masked || RELU[k] > 0 ? DY[k] : 0.f);
      EXPECT_EQ(acc.to_vector(), want) << what;
    }
  }

  // Max-pool 3x3/2 pad 1, channels-last: every output is its window's first max, its winner the
  // plane index PyTorch returns; backward routes to the winners. C = 70: more than a chunk.
  for (const Pool2dShape p : {Pool2dShape{2, 3, 7, 6, 3, 2, 1}, Pool2dShape{2, 70, 14, 14, 3, 2, 1}}) {
    const int64_t C = p.C, OH = p.OH(), OW = p.OW();
    Tensor px = random_tensor({p.N, p.H, p.W, C}, 8), py = poisoned({p.N, OH, OW, C});
    std::vector<int32_t> arg(p.N * OH * OW * C, -7);
    cpu::maxpool2d_forward_nhwc(py.data<float>(), arg.data(), px.data<float>(), p);
    Tensor pdy = random_tensor({p.N, OH, OW, C}, 9), pdx = poisoned({p.N, p.H, p.W, C});
    cpu::maxpool2d_backward_nhwc(pdx.data<float>(), pdy.data<float>(), arg.data(), p);
    std::vector<double> rpdx(px.numel(), 0.0);
    const std::vector<float> PX = px.to_vector(), PY = py.to_vector(), PDY = pdy.to_vector();
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t oy = 0; oy < OH; ++oy)
        for (int64_t ox = 0; ox < OW; ++ox)
          for (int64_t c = 0; c < C; ++c) {
            double best = -1e30;
            int64_t at = -1;
            for (int64_t r = 0; r < 3; ++r)
              for (int64_t q = 0; q < 3; ++q) {
                const int64_t iy = oy * 2 - 1 + r, ix = ox * 2 - 1 + q;
                if (iy < 0 || iy >= p.H || ix < 0 || ix >= p.W) continue;
                const float v = PX[((n * p.H + iy) * p.W + ix) * C + c];
                if (v > best) best = v, at = iy * p.W + ix;
              }
            const int64_t o = ((n * OH + oy) * OW + ox) * C + c;
            ASSERT_EQ(PY[o], float(best));
            ASSERT_EQ(arg[o], at);
            rpdx[(n * p.H * p.W + at) * C + c] += PDY[o];
          }
    EXPECT_LT(rel_err(pdx.to_vector(), rpdx), 1e-6);
    // Global average pooling over the plane, and its backward.
    const int64_t HW = p.H * p.W;
    Tensor g = poisoned({p.N, C}), gdx = poisoned({p.N, HW, C});
    cpu::global_avgpool_forward_nhwc(g.data<float>(), px.data<float>(), p.N, HW, C);
    cpu::global_avgpool_backward_nhwc(gdx.data<float>(), g.data<float>(), p.N, HW, C);
    std::vector<double> rg(p.N * C, 0.0), rgdx(p.N * HW * C);
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t k = 0; k < HW; ++k)
        for (int64_t c = 0; c < C; ++c) rg[n * C + c] += PX[(n * HW + k) * C + c] / double(HW);
    const std::vector<float> G = g.to_vector();
    for (int64_t n = 0; n < p.N; ++n)
      for (int64_t k = 0; k < HW; ++k)
        for (int64_t c = 0; c < C; ++c) rgdx[(n * HW + k) * C + c] = G[n * C + c] / double(HW);
    EXPECT_LT(rel_err(G, rg), 1e-6);
    EXPECT_LT(rel_err(gdx.to_vector(), rgdx), 1e-6);
  }

  // Softmax cross-entropy: loss, gradient, accuracy.
  Tensor z = random_tensor({4, 3}, 10), dz = poisoned({4, 3});
  const int32_t labels[4] = {0, 2, 1, 1};
  int64_t correct = -1;
  const double loss = cpu::softmax_xent(dz.data<float>(), z.data<float>(), labels, 4, 3, &correct);
  const std::vector<float> Z = z.to_vector();
  double want = 0;
  int64_t right = 0;
  std::vector<double> rdz(12);
  for (int n = 0; n < 4; ++n) {
    double se = 0;
    int arg_max = 0;
    for (int k = 0; k < 3; ++k) {
      se += std::exp(double(Z[n * 3 + k]));
      if (Z[n * 3 + k] > Z[n * 3 + arg_max]) arg_max = k;
    }
    want += std::log(se) - Z[n * 3 + labels[n]];
    right += arg_max == labels[n];
    for (int k = 0; k < 3; ++k) rdz[n * 3 + k] = (std::exp(double(Z[n * 3 + k])) / se - (k == labels[n])) / 4;
  }
  EXPECT_NEAR(loss, want / 4, 1e-6);
  EXPECT_EQ(correct, right);
  EXPECT_LT(rel_err(dz.to_vector(), rdz), 1e-6);
}

// ---- channels-last (the CPU ResNet's layout) against the NCHW twins --------------------------
namespace {
std::vector<float> to_nhwc(const Tensor& t, int64_t N, int64_t C, int64_t HW) {
  std::vector<float> out(N * C * HW);
  cpu::nchw_to_nhwc(out.data(), t.data<float>(), N, C, HW);
  return out;
}
std::vector<float> to_nchw(const std::vector<float>& v, int64_t N, int64_t C, int64_t HW) {
  std::vector<float> out(v.size());
  cpu::nhwc_to_nchw(out.data(), v.data(), N, C, HW);
  return out;
}
std::vector<float> nan_vector(int64_t n) { return std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()); }
}  // namespace

// The dataset stays bytes; a batch becomes float as it is gathered: exactly the float the old
// float dataset held (p / 255, then (v - mean) / std), by index and in order.
TEST(CnnLayers, GatherPixelsConvertsAsTheFloatDatasetDid) {
  const int64_t count = 9, len = 28, rows = 5;
  std::vector<uint8_t> bytes(count * len);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 53 % 256);
  const int64_t idx[rows] = {8, 0, 3, 3, 7};
  for (const PixelScale sc : {PixelScale{}, PixelScale{true, 0.2860f, 0.3530f}})
    for (const bool by_index : {true, false}) {
      Tensor out = poisoned({rows, len});
      cpu::gather_pixels(out.data<float>(), bytes.data(), by_index ? idx : nullptr, rows, len, sc);
      for (int64_t i = 0; i < rows; ++i)
        for (int64_t j = 0; j < len; ++j) {
          const float v = bytes[(by_index ? idx[i] : i) * len + j] / 255.f;
          const float want = sc.normalize ? (v - 0.2860f) / 0.3530f : v;
          ASSERT_EQ(out.data<float>()[i * len + j], want) << i << "," << j;
        }
    }
}

// Runs one channels-last lowering of s: y = conv(x), dx, dw (NHWC activations, [K, C, R, S] weights).
// keep_im2col: the tap-exact forward keeps its im2col rows for backward filter, which then finds
// only poison in the workspace.
struct NhwcConvResult {
  std::vector<float> y, dx, dw;
};
NhwcConvResult run_nhwc(ConvLowering lowering, const Conv2dShape& s, const std::vector<float>& x,
                        const std::vector<float>& w, const std::vector<float>& dy, bool keep_im2col = false) {
  const bool taps = lowering == ConvLowering::TapExact;
  NhwcConvResult out{nan_vector(s.N * s.OH() * s.OW() * s.K), nan_vector(int64_t(x.size())),
                     nan_vector(int64_t(w.size()))};
  const int64_t packed_floats = taps ? conv2d_taps_packed_floats(s) : cpu::conv2d_nhwc_packed_floats(s);
  const int64_t ws_floats = taps ? conv2d_taps_workspace_floats(s) : cpu::conv2d_nhwc_workspace_floats(s);
  std::vector<float> packed(std::max<int64_t>(packed_floats, 1));
  Tensor ws = poisoned({std::max<int64_t>(ws_floats, 1)});
  // Pack other weights first, then the real ones: what runs must be the last packing.
  std::vector<float> other(w.size(), 0.375f);
  for (const std::vector<float>* v : std::initializer_list<const std::vector<float>*>{&other, &w}) {
    if (taps)
      cpu::conv2d_taps_pack_weights(packed.data(), v->data(), s);
    else
      cpu::conv2d_nhwc_pack_weights(packed.data(), v->data(), s);
  }
  float* W = ws.data<float>();
  if (taps) {
    Tensor im2col = poisoned({std::max<int64_t>(conv2d_taps_im2col_floats(s), 1)});
    float* keep = keep_im2col && conv2d_taps_im2col_floats(s) > 0 ? im2col.data<float>() : nullptr;
    cpu::conv2d_taps_forward(out.y.data(), x.data(), packed.data(), s, W, keep);
    cpu::conv2d_taps_backward_data(out.dx.data(), dy.data(), packed.data(), s, W);
    if (keep) ws = poisoned({std::max<int64_t>(ws_floats, 1)}), W = ws.data<float>();
    cpu::conv2d_taps_backward_filter(out.dw.data(), dy.data(), x.data(), s, W, keep);
  } else {
    cpu::conv2d_forward_nhwc(out.y.data(), x.data(), w.data(), packed.data(), s, W);
    cpu::conv2d_backward_data_nhwc(out.dx.data(), dy.data(), w.data(), packed.data(), s, W);
    cpu::conv2d_backward_filter_nhwc(out.dw.data(), dy.data(), x.data(), s, W);
  }
  return out;
}

std::string shape_name(const Conv2dShape& s) {
  return cat("N=", s.N, " C=", s.C, " H=", s.H, " W=", s.W, " K=", s.K, " R=", s.R, " S=", s.S, " stride=", s.stride,
             " pad=", s.pad, conv2d_is_dense_gemm(s) ? " (dense)" : "");
}

// The library's convolution (oneDNN) and the tap-exact lowering, channels-last, against the NCHW
// twin (itself checked against float64 loops above).
TEST(CnnLayers, Conv2dNhwcMatchesNchwTwin) {
  std::printf("[conv nhwc] %s\n", cpu::conv2d_nhwc_backend().c_str());
  for (Conv2dShape s : {Conv2dShape{2, 3, 9, 7, 4, 3, 3, 1, 1}, Conv2dShape{3, 1, 28, 28, 64, 7, 7, 2, 3},
                        Conv2dShape{16, 64, 7, 7, 64, 3, 3, 1, 1}, Conv2dShape{5, 64, 7, 7, 128, 1, 1, 2, 0},
                        Conv2dShape{4, 20, 5, 6, 24, 3, 3, 2, 1}, Conv2dShape{16, 512, 1, 1, 512, 3, 3, 1, 1},
                        // The dense case: ResNet18's layer4 at 28x28 (3x3/2 on 2x2, 3x3/1 on 1x1) and
                        // layer3 (3x3/1 on 2x2) at batch 1 and 64; rectangular images; a 5x5 kernel on
                        // 3x3 and 1x1 maps.
                        Conv2dShape{1, 256, 2, 2, 512, 3, 3, 2, 1}, Conv2dShape{64, 256, 2, 2, 512, 3, 3, 2, 1},
                        Conv2dShape{1, 512, 1, 1, 512, 3, 3, 1, 1}, Conv2dShape{64, 512, 1, 1, 512, 3, 3, 1, 1},
                        Conv2dShape{1, 256, 2, 2, 256, 3, 3, 1, 1}, Conv2dShape{64, 256, 2, 2, 256, 3, 3, 1, 1},
                        Conv2dShape{3, 8, 2, 1, 5, 3, 3, 2, 1}, Conv2dShape{3, 8, 1, 2, 5, 3, 3, 1, 1},
                        Conv2dShape{2, 8, 1, 1, 6, 5, 5, 1, 2}, Conv2dShape{2, 8, 3, 3, 6, 5, 5, 1, 2}}) {
    const int64_t HW = s.H * s.W, P = s.OH() * s.OW();
    Tensor x = random_tensor({s.N, s.C, s.H, s.W}, 1), w = random_tensor({s.K, s.C, s.R, s.S}, 2);
    Tensor dy = random_tensor({s.N, s.K, s.OH(), s.OW()}, 3);
    Tensor y = poisoned({s.N, s.K, s.OH(), s.OW()}), dx = poisoned({s.N, s.C, s.H, s.W}), dw = poisoned({s.K, s.C, s.R, s.S});
    Tensor ws = Tensor::empty({cpu::conv2d_workspace_floats(s)});
    cpu::conv2d_forward(y.data<float>(), x.data<float>(), w.data<float>(), s, ws.data<float>());
    cpu::conv2d_backward_data(dx.data<float>(), dy.data<float>(), w.data<float>(), s, ws.data<float>());
    cpu::conv2d_backward_filter(dw.data<float>(), dy.data<float>(), x.data<float>(), s, ws.data<float>());
    for (const ConvLowering lowering : {ConvLowering::Library, ConvLowering::TapExact}) {
      const NhwcConvResult r = run_nhwc(lowering, s, to_nhwc(x, s.N, s.C, HW), w.to_vector(), to_nhwc(dy, s.N, s.K, P));
      const std::string what = cat(shape_name(s), lowering == ConvLowering::TapExact ? " tap-exact" : " library");
      EXPECT_LT(rel_err(to_nchw(r.y, s.N, s.K, P), y.to_vector()), 1e-5) << what;
      EXPECT_LT(rel_err(to_nchw(r.dx, s.N, s.C, HW), dx.to_vector()), 1e-5) << what;
      EXPECT_LT(rel_err(r.dw, dw.to_vector()), 1e-5) << what;
    }
  }
}

// The tap groups of a 3x3/1 pad-1 convolution on 4x4 (corners 4 taps, edges 6, middle 9: 100 of
// 144), of 3x3/2 on 7x7 and of a window that misses the image.
TEST(CnnLayers, TapGroupsCoverEveryOutputPixelWithItsValidTaps) {
  for (const Conv2dShape& s : {Conv2dShape{1, 1, 4, 4, 1, 3, 3, 1, 1}, Conv2dShape{1, 1, 7, 7, 1, 3, 3, 2, 1},
                              Conv2dShape{1, 1, 3, 5, 1, 1, 1, 1, 1}, Conv2dShape{1, 1, 9, 6, 1, 7, 5, 3, 3}}) {
    std::vector<int> seen(s.OH() * s.OW(), 0);
    for (const ConvTapGroup& g : conv2d_tap_groups(s))
      for (int64_t oy = g.oy0; oy < g.oy1; ++oy)
        for (int64_t ox = g.ox0; ox < g.ox1; ++ox) {
          ++seen[oy * s.OW() + ox];
          for (int64_t r = 0; r < s.R; ++r)
            for (int64_t t = 0; t < s.S; ++t) {
              const int64_t iy = oy * s.stride - s.pad + r, ix = ox * s.stride - s.pad + t;
              const bool inside = iy >= 0 && iy < s.H && ix >= 0 && ix < s.W;
              EXPECT_EQ(inside, r >= g.r0 && r < g.r1 && t >= g.t0 && t < g.t1) << shape_name(s) << " " << oy << "," << ox;
            }
        }
    EXPECT_EQ(seen, std::vector<int>(seen.size(), 1)) << shape_name(s);
  }
  EXPECT_EQ(conv2d_tap_groups({1, 1, 4, 4, 1, 3, 3, 1, 1}).size(), 9u);
  EXPECT_EQ(conv2d_tap_exact_macs({1, 1, 4, 4, 1, 3, 3, 1, 1}), 100);
}

namespace {
// y, dx, dw of an NHWC convolution in float64.
struct Reference {
  std::vector<double> y, dx, dw;
};
Reference reference_nhwc(const Conv2dShape& s, const std::vector<float>& x, const std::vector<float>& w,
                         const std::vector<float>& dy) {
  Reference r{std::vector<double>(s.N * s.OH() * s.OW() * s.K), std::vector<double>(x.size()),
              std::vector<double>(w.size())};
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t oy = 0; oy < s.OH(); ++oy)
      for (int64_t ox = 0; ox < s.OW(); ++ox)
        for (int64_t k = 0; k < s.K; ++k) {
          const int64_t yi = ((n * s.OH() + oy) * s.OW() + ox) * s.K + k;
          for (int64_t rr = 0; rr < s.R; ++rr)
            for (int64_t t = 0; t < s.S; ++t) {
              const int64_t iy = oy * s.stride - s.pad + rr, ix = ox * s.stride - s.pad + t;
              if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
              for (int64_t c = 0; c < s.C; ++c) {
                const int64_t xi = ((n * s.H + iy) * s.W + ix) * s.C + c, wi = ((k * s.C + c) * s.R + rr) * s.S + t;
                r.y[yi] += double(w[wi]) * x[xi];
                r.dx[xi] += double(w[wi]) * dy[yi];
                r.dw[wi] += double(x[xi]) * dy[yi];
              }
            }
        }
  return r;
}
std::vector<float> random_vector(int64_t n, uint64_t seed) { return random_tensor({n}, seed).to_vector(); }
}  // namespace

// Every convolution geometry ResNet18 meets at 28x28, 32x32 and 64x64 inputs (strides 1 and 2,
// 7x7, 3x3 and 1x1 kernels; the channel counts cut to 5 in and 3 out, which the tap logic never
// looks at), at batch 1 and 3, plus windows that miss the image and odd strides: the tap-exact
// lowering against float64 loops. The taps on padding get exactly 0 gradient.
TEST(CnnLayers, TapExactMatchesFloat64OnEveryResNet18Geometry) {
  std::vector<Conv2dShape> shapes = {{2, 5, 3, 5, 3, 1, 1, 1, 1}, {2, 5, 9, 6, 3, 7, 5, 3, 3}, {1, 5, 1, 1, 3, 1, 1, 2, 1}};
  for (const int64_t size : {28, 32, 64})
    for (const int64_t batch : {1, 3})
      for (auto [name, s] : resnet18_conv_shapes(batch, size, size)) {
        s.C = 5, s.K = 3;
        shapes.push_back(s);
      }
  for (const Conv2dShape& s : shapes) {
    const std::vector<float> x = random_vector(s.N * s.H * s.W * s.C, 7), w = random_vector(s.K * s.C * s.R * s.S, 8);
    const std::vector<float> dy = random_vector(s.N * s.OH() * s.OW() * s.K, 9);
    const NhwcConvResult got = run_nhwc(ConvLowering::TapExact, s, x, w, dy);
    const Reference want = reference_nhwc(s, x, w, dy);
    EXPECT_LT(rel_err(got.y, want.y), 1e-6) << shape_name(s);
    EXPECT_LT(rel_err(got.dx, want.dx), 1e-6) << shape_name(s);
    EXPECT_LT(rel_err(got.dw, want.dw), 1e-6) << shape_name(s);
    for (size_t i = 0; i < want.dw.size(); ++i)
      if (want.dw[i] == 0) {
        EXPECT_EQ(got.dw[i], 0.f) << shape_name(s) << " tap " << i;
      }
    // The same rows kept from forward for backward filter: the same numbers, bit for bit.
    const NhwcConvResult kept = run_nhwc(ConvLowering::TapExact, s, x, w, dy, true);
    EXPECT_EQ(kept.y, got.y) << shape_name(s);
    EXPECT_EQ(kept.dw, got.dw) << shape_name(s);
  }
}

// The measured rule, pinned (conv2d_taps.cpp gives the measurements): at 28x28, batch 64, which
// convolutions run tap-exact per direction; batch 16 keeps the 7x7 and 4x4 maps' backward filter
// (and 4x4's backward data) on the library; the environment override forces either lowering and
// refuses anything else.
TEST(CnnLayers, ConvLoweringRuleAndOverride) {
  auto chosen = [](int64_t batch) {
    std::string out;
    for (const auto& [name, s] : resnet18_conv_shapes(batch, 28, 28)) {
      out += name + ":";
      for (const ConvDirection d : {ConvDirection::Forward, ConvDirection::BackwardData, ConvDirection::BackwardFilter})
        out += conv2d_lowering(s, d) == ConvLowering::TapExact ? "T" : "L";
      out += " ";
    }
    return out;
  };
  const std::string b64 = chosen(64);
  EXPECT_EQ(b64,
            "conv1:LLL layer1.0.conv1:TLT layer1.0.conv2:TLT layer1.1.conv1:TLT layer1.1.conv2:TLT "
            "layer2.0.conv1:TTT layer2.0.conv2:TTT layer2.0.downsample.0:LLT layer2.1.conv1:TTT layer2.1.conv2:TTT "
            "layer3.0.conv1:TTT layer3.0.conv2:TTT layer3.0.downsample.0:LLT layer3.1.conv1:TTT layer3.1.conv2:TTT "
            "layer4.0.conv1:TTT layer4.0.conv2:TTT layer4.0.downsample.0:LLT layer4.1.conv1:TTT layer4.1.conv2:TTT ");
  EXPECT_EQ(chosen(16),
            "conv1:LLL layer1.0.conv1:TLL layer1.0.conv2:TLL layer1.1.conv1:TLL layer1.1.conv2:TLL "
            "layer2.0.conv1:TLL layer2.0.conv2:TLL layer2.0.downsample.0:LLT layer2.1.conv1:TLL layer2.1.conv2:TLL "
            "layer3.0.conv1:TTT layer3.0.conv2:TTT layer3.0.downsample.0:LLT layer3.1.conv1:TTT layer3.1.conv2:TTT "
            "layer4.0.conv1:TTT layer4.0.conv2:TTT layer4.0.downsample.0:LLT layer4.1.conv1:TTT layer4.1.conv2:TTT ");
  const Conv2dShape stem = resnet18_conv_shapes(64, 28, 28)[0].second;
  ASSERT_EQ(setenv("HANDGRAD_CONV_LOWERING", "tap-exact", 1), 0);
  EXPECT_EQ(conv2d_lowering(stem, ConvDirection::Forward), ConvLowering::TapExact);
  ASSERT_EQ(setenv("HANDGRAD_CONV_LOWERING", "library", 1), 0);
  EXPECT_EQ(conv2d_lowering(resnet18_conv_shapes(64, 28, 28).back().second, ConvDirection::Forward),
            ConvLowering::Library);
  ASSERT_EQ(setenv("HANDGRAD_CONV_LOWERING", "fastest", 1), 0);
  EXPECT_THROW(conv2d_lowering(stem, ConvDirection::Forward), UserError);
  ASSERT_EQ(unsetenv("HANDGRAD_CONV_LOWERING"), 0);
  EXPECT_EQ(chosen(64), b64);
}

// Every convolution of ResNet18 with its real channels, at 28x28 (batch 1, 16, 64) and 32x32 and
// 64x64 (batch 1, 16): the tap-exact lowering against the library's (oneDNN), up to summation order.
TEST(CnnLayers, TapExactMatchesTheLibraryOnEveryResNet18Convolution) {
  for (const auto& [size, batch] : std::vector<std::pair<int64_t, int64_t>>{
           {28, 1}, {28, 16}, {28, 64}, {32, 1}, {32, 16}, {64, 1}, {64, 16}})
    for (const auto& [name, s] : resnet18_conv_shapes(batch, size, size)) {
      const std::vector<float> x = random_vector(s.N * s.H * s.W * s.C, 11);
      const std::vector<float> w = random_vector(s.K * s.C * s.R * s.S, 12);
      const std::vector<float> dy = random_vector(s.N * s.OH() * s.OW() * s.K, 13);
      const NhwcConvResult lib = run_nhwc(ConvLowering::Library, s, x, w, dy);
      const NhwcConvResult taps = run_nhwc(ConvLowering::TapExact, s, x, w, dy);
      const std::string what = cat(name, " ", shape_name(s));
      EXPECT_LT(rel_err(taps.y, lib.y), 1e-5) << what;
      EXPECT_LT(rel_err(taps.dx, lib.dx), 1e-5) << what;
      EXPECT_LT(rel_err(taps.dw, lib.dw), 1e-5) << what;
    }
}

// The convolution layer's context reads the weights through its packed copy: new weights count
// only after weights_changed(), and then exactly as a fresh context sees them. (Without oneDNN
// the CPU reads the weights directly: nothing is packed, nothing can be stale.)
TEST(CnnLayers, Conv2dContextRepacksOnlyWhenTold) {
  const Conv2dShape s{2, 8, 9, 9, 16, 3, 3, 1, 1};
  Tensor x = random_tensor({s.N, s.H, s.W, s.C}, 1), w = random_tensor({s.K, s.C, s.R, s.S}, 2);
  Tensor w2 = random_tensor({s.K, s.C, s.R, s.S}, 3);
  nn::Conv2d conv(s, Device::CPU, false), fresh(s, Device::CPU, false);
  Tensor ws = Tensor::zeros({std::max<int64_t>(1, conv.workspace_floats())});
  const Shape ys{s.N, s.OH(), s.OW(), s.K};
  Tensor y1 = poisoned(ys), y_stale = poisoned(ys), y2 = poisoned(ys), want2 = poisoned(ys);
  conv.forward(y1.data<float>(), x.data<float>(), w.data<float>(), ws.data<float>());
  conv.forward(y_stale.data<float>(), x.data<float>(), w2.data<float>(), ws.data<float>());
  if (cpu::conv2d_nhwc_packed_floats(s) > 0) {
    EXPECT_EQ(y_stale.to_vector(), y1.to_vector());  // still the packed w
  }
  conv.weights_changed();
  conv.forward(y2.data<float>(), x.data<float>(), w2.data<float>(), ws.data<float>());
  fresh.forward(want2.data<float>(), x.data<float>(), w2.data<float>(), ws.data<float>());
  EXPECT_EQ(y2.to_vector(), want2.to_vector());
  EXPECT_NE(y2.to_vector(), y1.to_vector());
}

// A training step replayed from a captured step (ResNet18::train_step_graphed: a CUDA graph on
// the GPU, the recorded step on the CPU with the same bookkeeping) is the eager step, bit for
// bit: the same weights, running statistics, counters, momentum and loss sums, for frozen and
// full fine-tuning. The order is what the trainer does: replays, an evaluation between them (it
// re-packs the convolutions' weights), replays again, an eager short last batch, an evaluation,
// and a new learning rate (a new capture). The short batch and the last evaluation run eagerly
// on whatever packed weights the host's books say are current.
static void expect_graphed_steps_equal_eager(Device dev) {
  const int64_t N = 8;
  Tensor images = random_tensor({N, 1, 28, 28}, 41).to(dev);
  std::vector<int32_t> labels = {9, 1, 2, 3, 4, 5, 6, 0};
  Buffer dlabels(sizeof(int32_t) * N, dev);
  copy_bytes(dlabels.get(), dev, labels.data(), Device::CPU, sizeof(int32_t) * N);
  const int32_t* lab = static_cast<const int32_t*>(dlabels.get());
  const float* img = images.data<float>();
  for (const char* freeze : {"backbone", "none"}) {
    SCOPED_TRACE(freeze);
    ResNet18 eager(N, 28, 28, dev), graphed(N, 28, 28, dev);
    eager.init_random(5);
    graphed.init_random(5);
    eager.set_freeze(freeze);
    graphed.set_freeze(freeze);
    auto eager_step = [&](ResNet18& m, int64_t n, float lr) {
      m.enqueue_forward(img, lab, n, true);
      m.backward();
      m.sgd_step(lr, 0.9f);
    };
    auto both_steps = [&](int steps, float lr) {
      for (int step = 0; step < steps; ++step) {
        eager_step(eager, N, lr);
        ASSERT_TRUE(graphed.train_step_graphed(img, lab, lr, 0.9f)) << graphed.graph_disabled_reason();
      }
    };
    auto both_evaluate = [&](const char* when) {
      int64_t correct_eager = 0, correct_graphed = 0;
      EXPECT_EQ(eager.forward(img, lab, N, false, &correct_eager), graphed.forward(img, lab, N, false, &correct_graphed))
          << when;
      EXPECT_EQ(correct_eager, correct_graphed) << when;
    };
    eager_step(eager, N, 0.01f);  // the first full-batch step runs eagerly: it plans the convolutions
    EXPECT_FALSE(graphed.train_step_graphed(img, lab, 0.01f, 0.9f));
    both_steps(3, 0.01f);
    both_evaluate("after the first replays");
    both_steps(2, 0.01f);
    eager_step(eager, N / 2, 0.01f);  // the short last batch of an epoch, eagerly
    eager_step(graphed, N / 2, 0.01f);
    both_evaluate("after replays and a short batch");
    both_steps(3, 0.02f);
    const ResNet18::Sums a = eager.take_sums(), b = graphed.take_sums();
    EXPECT_EQ(a.loss, b.loss);
    EXPECT_EQ(a.images, b.images);
    EXPECT_EQ(a.correct, b.correct);
    for (const auto& [x, y] : {std::pair{eager.state_dict(), graphed.state_dict()},
                               std::pair{eager.momentum_state(), graphed.momentum_state()}})
      for (size_t i = 0; i < x.entries.size(); ++i) {
        const Tensor& tx = x.entries[i].second;
        const Tensor& ty = y.entries[i].second;
        if (tx.dtype() == DType::I64)
          EXPECT_EQ(tx.data<int64_t>()[0], ty.data<int64_t>()[0]) << x.entries[i].first;
        else
          EXPECT_EQ(tx.to_vector(), ty.to_vector()) << x.entries[i].first;
      }
  }
}

TEST(CnnLayers, GraphedStepEqualsEagerStepOnTheCpu) { expect_graphed_steps_equal_eager(Device::CPU); }

#ifdef HANDGRAD_WITH_CUDA
#include "kernels/nn/relu.h"
#include "kernels/nn/rows.h"
#include "kernels/optim/sgd.h"
#include "host/nn.h"
#include "models/resnet18.h"

// Every Q3 CUDA layer against its CPU twin, into poisoned outputs: the convolutions (cuDNN), then
// handgrad's own kernels (which the SIMT emulator runs too).
TEST(CnnCuda, ConvolutionsMatchCpuTwins) {
  HG_SKIP_WITHOUT_GPU();
  auto dev = [](const Tensor& t) { return t.to(Device::CUDA); };
  // Convolutions: the layer context on each device (oneDNN or im2col on the CPU, cuDNN on NHWC
  // with KRSC-packed weights on the GPU), channels-last activations, KCRS weights.
  for (Conv2dShape s : {Conv2dShape{4, 3, 9, 7, 8, 3, 3, 1, 1}, Conv2dShape{3, 1, 28, 28, 64, 7, 7, 2, 3},
                        Conv2dShape{5, 16, 4, 4, 32, 1, 1, 2, 0}, Conv2dShape{2, 64, 7, 7, 128, 3, 3, 2, 1}}) {
    const std::string what = cat("conv N", s.N, " C", s.C, " ", s.H, "x", s.W, " K", s.K, " ", s.R, "/", s.stride);
    Tensor x = random_tensor({s.N, s.H, s.W, s.C}, 1), w = random_tensor({s.K, s.C, s.R, s.S}, 2);
    Tensor dy = random_tensor({s.N, s.OH(), s.OW(), s.K}, 3);
    nn::Conv2d cc(s, Device::CPU, false), gc(s, Device::CUDA, false);
    Tensor ws = Tensor::zeros({std::max<int64_t>(1, cc.workspace_floats())});
    Tensor gws = poisoned({std::max<int64_t>(1, gc.workspace_floats())}, Device::CUDA);
    Tensor y = poisoned(dy.shape()), dx = poisoned(x.shape()), dw = poisoned(w.shape());
    cc.forward(y.data<float>(), x.data<float>(), w.data<float>(), ws.data<float>());
    cc.backward_data(dx.data<float>(), dy.data<float>(), w.data<float>(), ws.data<float>());
    cc.backward_filter(dw.data<float>(), dy.data<float>(), x.data<float>(), ws.data<float>());
    Tensor gx = dev(x), gw = dev(w), gdy = dev(dy);
    Tensor gy = poisoned(dy.shape(), Device::CUDA), gdx = poisoned(x.shape(), Device::CUDA),
           gdw = poisoned(w.shape(), Device::CUDA);
    gc.forward(gy.data<float>(), gx.data<float>(), gw.data<float>(), gws.data<float>());
    gc.backward_data(gdx.data<float>(), gdy.data<float>(), gw.data<float>(), gws.data<float>());
    gc.backward_filter(gdw.data<float>(), gdy.data<float>(), gx.data<float>(), gws.data<float>());
    EXPECT_LT(rel_err(gy.to_vector(), y.to_vector()), 1e-5) << what;
    EXPECT_LT(rel_err(gdx.to_vector(), dx.to_vector()), 1e-5) << what;
    EXPECT_LT(rel_err(gdw.to_vector(), dw.to_vector()), 1e-5) << what;
    // New weights must reach the packed copy only after weights_changed().
    Tensor w2 = random_tensor(w.shape(), 4), gw2 = dev(w2);
    cc.weights_changed();
    gc.weights_changed();
    cc.forward(y.data<float>(), x.data<float>(), w2.data<float>(), ws.data<float>());
    gc.forward(gy.data<float>(), gx.data<float>(), gw2.data<float>(), gws.data<float>());
    EXPECT_LT(rel_err(gy.to_vector(), y.to_vector()), 1e-5) << what << " after new weights";
  }
}

// The tap-exact lowering's GPU twin (gathers, scatters and fold-backs: our kernels; products:
// cuBLAS, or handgrad's GEMM on the SIMT emulator) against the CPU's, on every ResNet18 geometry at
// 28x28 with few channels (the emulator's pace), the dense case with real channels, and windows
// that miss the image. The packed weights are copies: bit-equal on both devices.
TEST(CnnCuda, TapExactConvolutionsMatchCpuTwins) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  std::vector<Conv2dShape> shapes = {{2, 5, 3, 5, 3, 1, 1, 1, 1}, {2, 5, 9, 6, 3, 7, 5, 3, 3},
                                     {3, 32, 2, 2, 16, 3, 3, 1, 1}, {3, 16, 2, 2, 32, 3, 3, 2, 1}};
  for (auto [name, s] : resnet18_conv_shapes(2, 28, 28)) {
    s.C = std::min<int64_t>(s.C, 6), s.K = std::min<int64_t>(s.K, 5);
    shapes.push_back(s);
  }
  for (const Conv2dShape& s : shapes) {
    const std::string what = shape_name(s);
    Tensor x = random_tensor({s.N, s.H, s.W, s.C}, 1), w = random_tensor({s.K, s.C, s.R, s.S}, 2);
    Tensor dy = random_tensor({s.N, s.OH(), s.OW(), s.K}, 3);
    const int64_t pf = std::max<int64_t>(1, conv2d_taps_packed_floats(s));
    const int64_t wf = std::max<int64_t>(1, conv2d_taps_workspace_floats(s));
    Tensor packed = poisoned({pf}), ws = poisoned({wf});
    Tensor y = poisoned(dy.shape()), dx = poisoned(x.shape()), dw = poisoned(w.shape());
    cpu::conv2d_taps_pack_weights(packed.data<float>(), w.data<float>(), s);
    cpu::conv2d_taps_forward(y.data<float>(), x.data<float>(), packed.data<float>(), s, ws.data<float>());
    cpu::conv2d_taps_backward_data(dx.data<float>(), dy.data<float>(), packed.data<float>(), s, ws.data<float>());
    cpu::conv2d_taps_backward_filter(dw.data<float>(), dy.data<float>(), x.data<float>(), s, ws.data<float>());
    Tensor gx = x.to(Device::CUDA), gw = w.to(Device::CUDA), gdy = dy.to(Device::CUDA);
    Tensor gpacked = poisoned({pf}, Device::CUDA), gws = poisoned({wf}, Device::CUDA);
    Tensor gy = poisoned(dy.shape(), Device::CUDA), gdx = poisoned(x.shape(), Device::CUDA),
           gdw = poisoned(w.shape(), Device::CUDA);
    cuda::conv2d_taps_pack_weights(gpacked.data<float>(), gw.data<float>(), s);
    cuda::conv2d_taps_forward(gy.data<float>(), gx.data<float>(), gpacked.data<float>(), s, gws.data<float>());
    cuda::conv2d_taps_backward_data(gdx.data<float>(), gdy.data<float>(), gpacked.data<float>(), s, gws.data<float>());
    cuda::conv2d_taps_backward_filter(gdw.data<float>(), gdy.data<float>(), gx.data<float>(), s, gws.data<float>());
    // Backward filter reading the im2col rows a forward kept (the workspace poisoned in between).
    const int64_t kf = conv2d_taps_im2col_floats(s);
    Tensor gkept = poisoned({std::max<int64_t>(kf, 1)}, Device::CUDA), gy_kept = poisoned(dy.shape(), Device::CUDA),
           gdw_kept = poisoned(w.shape(), Device::CUDA);
    float* keep = kf > 0 ? gkept.data<float>() : nullptr;
    cuda::conv2d_taps_forward(gy_kept.data<float>(), gx.data<float>(), gpacked.data<float>(), s, gws.data<float>(), keep);
    gws = poisoned({wf}, Device::CUDA);
    cuda::conv2d_taps_backward_filter(gdw_kept.data<float>(), gdy.data<float>(), gx.data<float>(), s, gws.data<float>(),
                                      keep);
    EXPECT_LT(rel_err(gy_kept.to_vector(), y.to_vector()), 1e-5) << what << " (im2col kept)";
    EXPECT_LT(rel_err(gdw_kept.to_vector(), dw.to_vector()), 1e-5) << what << " (im2col kept)";
    const std::vector<float> p_cpu = packed.to_vector(), p_gpu = gpacked.to_vector();
    if (conv2d_taps_packed_floats(s) > 0)  // the padding between groups stays poisoned on both
      for (size_t i = 0; i < p_cpu.size(); ++i)
        if (!std::isnan(p_cpu[i]) || !std::isnan(p_gpu[i])) {
          ASSERT_EQ(p_gpu[i], p_cpu[i]) << what << " packed " << i;
        }
    EXPECT_LT(rel_err(gy.to_vector(), y.to_vector()), 1e-5) << what;
    EXPECT_LT(rel_err(gdx.to_vector(), dx.to_vector()), 1e-5) << what;
    EXPECT_LT(rel_err(gdw.to_vector(), dw.to_vector()), 1e-5) << what;
  }
}

TEST(CnnCuda, LayersMatchCpuTwins) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  auto dev = [](const Tensor& t) { return t.to(Device::CUDA); };
  // BatchNorm, channels-last: shapes with one chunk per channel tile, with many chunks (the
  // stem at batch 64: 12544 rows of 64), with channels that are no multiple of 32, and one row.
  for (auto [rows, C] : {std::pair<int64_t, int64_t>{392, 16}, {12544, 64}, {3000, 33}, {50, 3}, {16, 512}, {1, 7}}) {
    const std::string what = cat("BN ", rows, "x", C);
    Tensor x = random_tensor({rows, C}, 4), gamma = random_tensor({C}, 5), beta = random_tensor({C}, 6);
    for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] += 3.f;  // a mean away from 0: no cancellation
    Tensor rm = random_tensor({C}, 8), rv = Tensor::full({C}, 1.5f), grm = dev(rm), grv = dev(rv);
    Tensor gx = dev(x), gg = dev(gamma), gb = dev(beta);
    Tensor gws = poisoned({cuda::batchnorm_nhwc_workspace_floats(rows, C)}, Device::CUDA);
    Tensor m = poisoned({C}), is = poisoned({C}), gm = poisoned({C}, Device::CUDA), gis = poisoned({C}, Device::CUDA);
    const float eps = kBatchNormEps, momentum = kBatchNormMomentum;
    cpu::batchnorm_stats_nhwc(m.data<float>(), is.data<float>(), rm.data<float>(), rv.data<float>(), x.data<float>(),
                              rows, C, eps, momentum, nullptr);
    cuda::batchnorm_stats_nhwc(gm.data<float>(), gis.data<float>(), grm.data<float>(), grv.data<float>(),
                               gx.data<float>(), rows, C, eps, momentum, gws.data<float>());
    EXPECT_LT(rel_err(gm.to_vector(), m.to_vector()), 1e-6) << what;
    if (rows > 1) {
      EXPECT_LT(rel_err(gis.to_vector(), is.to_vector()), 1e-5) << what;
    }
    EXPECT_LT(rel_err(grm.to_vector(), rm.to_vector()), 1e-6) << what;
    EXPECT_LT(rel_err(grv.to_vector(), rv.to_vector()), 1e-5) << what;
    if (rows == 1) continue;  // one row: no variance to normalise by
    Tensor sc = poisoned({C}), sh = poisoned({C}), gsc = poisoned({C}, Device::CUDA), gsh = poisoned({C}, Device::CUDA);
    cpu::batchnorm_scale_shift(sc.data<float>(), sh.data<float>(), gamma.data<float>(), beta.data<float>(),
                               m.data<float>(), is.data<float>(), C);
    cuda::batchnorm_scale_shift(gsc.data<float>(), gsh.data<float>(), gg.data<float>(), gb.data<float>(),
                                dev(m).data<float>(), dev(is).data<float>(), C);
    EXPECT_LT(rel_err(gsc.to_vector(), sc.to_vector()), 1e-6) << what;
    EXPECT_LT(rel_err(gsh.to_vector(), sh.to_vector()), 1e-6) << what;
    // y = relu(bn(x)), relu(bn(x) + residual), relu(bn(x) + bn2(x2)), the CPU's scale and shift on both.
    Tensor x2 = random_tensor({rows, C}, 9), gx2 = dev(x2), gsc_c = dev(sc), gsh_c = dev(sh);
    for (int form = 0; form < 3; ++form) {
      const float* r = form == 1 ? x2.data<float>() : nullptr;
      const float* second = form == 2 ? x2.data<float>() : nullptr;
      Tensor y = poisoned({rows, C}), gy = poisoned({rows, C}, Device::CUDA);
      cpu::scale_shift_relu_nhwc(y.data<float>(), x.data<float>(), sc.data<float>(), sh.data<float>(), second,
                                 second ? sc.data<float>() : nullptr, second ? sh.data<float>() : nullptr, r, rows, C);
      cuda::scale_shift_relu_nhwc(gy.data<float>(), gx.data<float>(), gsc_c.data<float>(), gsh_c.data<float>(),
                                  second ? gx2.data<float>() : nullptr, second ? gsc_c.data<float>() : nullptr,
                                  second ? gsh_c.data<float>() : nullptr, r ? gx2.data<float>() : nullptr, rows, C);
      EXPECT_LT(rel_err(gy.to_vector(), y.to_vector()), 1e-6) << what << " form " << form;
    }
    {  // a NaN stays NaN through the ReLU, as on the CPU (a diverged run must show it)
      Tensor xn = x.clone();
      xn.data<float>()[C / 2] = std::numeric_limits<float>::quiet_NaN();
      Tensor y = poisoned({rows, C}), gy = poisoned({rows, C}, Device::CUDA);
      cpu::scale_shift_relu_nhwc(y.data<float>(), xn.data<float>(), sc.data<float>(), sh.data<float>(), nullptr, nullptr,
                                 nullptr, nullptr, rows, C);
      cuda::scale_shift_relu_nhwc(gy.data<float>(), dev(xn).data<float>(), gsc_c.data<float>(), gsh_c.data<float>(),
                                  nullptr, nullptr, nullptr, nullptr, rows, C);
      EXPECT_TRUE(std::isnan(y.to_vector()[C / 2]));
      EXPECT_TRUE(std::isnan(gy.to_vector()[C / 2])) << what;
    }
    // Backward, through a ReLU's mask and without one.
    Tensor dy = random_tensor({rows, C}, 10), gdy = dev(dy), relu = random_tensor({rows, C}, 11), grelu = dev(relu);
    for (bool masked : {false, true}) {
      Tensor dx = poisoned({rows, C}), dg = poisoned({C}), db = poisoned({C});
      Tensor gdx = poisoned({rows, C}, Device::CUDA), gdg = poisoned({C}, Device::CUDA), gdb = poisoned({C}, Device::CUDA);
      cpu::batchnorm_backward_nhwc(dx.data<float>(), dg.data<float>(), db.data<float>(), dy.data<float>(),
                                   masked ? relu.data<float>() : nullptr, x.data<float>(), gamma.data<float>(),
                                   m.data<float>(), is.data<float>(), rows, C, nullptr);
      cuda::batchnorm_backward_nhwc(gdx.data<float>(), gdg.data<float>(), gdb.data<float>(), gdy.data<float>(),
                                    masked ? grelu.data<float>() : nullptr, gx.data<float>(), gg.data<float>(),
                                    dev(m).data<float>(), dev(is).data<float>(), rows, C, gws.data<float>());
      EXPECT_LT(rel_err(gdx.to_vector(), dx.to_vector()), 1e-4) << what << (masked ? " masked" : "");
      EXPECT_LT(rel_err(gdg.to_vector(), dg.to_vector()), 1e-5) << what << (masked ? " masked" : "");
      EXPECT_LT(rel_err(gdb.to_vector(), db.to_vector()), 1e-5) << what << (masked ? " masked" : "");
    }
    Tensor esc = poisoned({C}), esh = poisoned({C}), gesc = poisoned({C}, Device::CUDA), gesh = poisoned({C}, Device::CUDA);
    cpu::batchnorm_eval_scale_shift(esc.data<float>(), esh.data<float>(), gamma.data<float>(), beta.data<float>(),
                                    rm.data<float>(), rv.data<float>(), C, eps);
    cuda::batchnorm_eval_scale_shift(gesc.data<float>(), gesh.data<float>(), gg.data<float>(), gb.data<float>(),
                                     dev(rm).data<float>(), dev(rv).data<float>(), C, eps);
    EXPECT_LT(rel_err(gesc.to_vector(), esc.to_vector()), 1e-6) << what;
    EXPECT_LT(rel_err(gesh.to_vector(), esh.to_vector()), 1e-6) << what;
  }
  // Max pooling, channels-last (ties included: a constant image; NaN included), bit for bit.
  const Pool2dShape ps{3, 70, 14, 14, 3, 2, 1};
  Tensor px = random_tensor({3, 14, 14, 70}, 9);
  std::fill(px.data<float>(), px.data<float>() + 14 * 14 * 70, 0.f);
  px.data<float>()[14 * 14 * 70 + 5] = std::numeric_limits<float>::quiet_NaN();
  Tensor gpx = dev(px);
  const int64_t on = 3 * ps.OH() * ps.OW() * 70;
  Tensor py = poisoned({on}), gpy = poisoned({on}, Device::CUDA);
  std::vector<int32_t> arg(on);
  Buffer garg(sizeof(int32_t) * on, Device::CUDA);
  cpu::maxpool2d_forward_nhwc(py.data<float>(), arg.data(), px.data<float>(), ps);
  cuda::maxpool2d_forward_nhwc(gpy.data<float>(), static_cast<int32_t*>(garg.get()), gpx.data<float>(), ps);
  const std::vector<float> pyv = py.to_vector(), gpyv = gpy.to_vector();
  ASSERT_EQ(gpyv.size(), pyv.size());
  for (size_t i = 0; i < pyv.size(); ++i)  // NaN == NaN here: the same window must win
    ASSERT_TRUE(gpyv[i] == pyv[i] || (std::isnan(gpyv[i]) && std::isnan(pyv[i]))) << i;
  std::vector<int32_t> garg_host(on);
  copy_bytes(garg_host.data(), Device::CPU, garg.get(), Device::CUDA, sizeof(int32_t) * on);
  EXPECT_EQ(garg_host, arg);
  Tensor pdy = random_tensor({on}, 10), gpdy = dev(pdy);
  Tensor pdx = poisoned(px.shape()), gpdx = poisoned(px.shape(), Device::CUDA);
  cpu::maxpool2d_backward_nhwc(pdx.data<float>(), pdy.data<float>(), arg.data(), ps);
  cuda::maxpool2d_backward_nhwc(gpdx.data<float>(), gpdy.data<float>(), static_cast<int32_t*>(garg.get()), ps);
  EXPECT_EQ(gpdx.to_vector(), pdx.to_vector());  // the same additions in the same order
  // The residual join's backward, with the ReLU's mask and without (the downsample's path).
  Tensor a = random_tensor({999}, 11), b = random_tensor({999}, 12), ga = dev(a), gb2 = dev(b);
  for (bool masked : {true, false}) {
    Tensor r = random_tensor({999}, 13), gr = dev(r);
    cpu::add_relu_backward(r.data<float>(), a.data<float>(), masked ? b.data<float>() : nullptr, 999);
    cuda::add_relu_backward(gr.data<float>(), ga.data<float>(), masked ? gb2.data<float>() : nullptr, 999);
    EXPECT_EQ(gr.to_vector(), r.to_vector()) << (masked ? "masked" : "plain");
  }
  Tensor v = Tensor::zeros({999}), gv = Tensor::zeros({999}, Device::CUDA), p = random_tensor({999}, 13), gp = dev(p);
  for (int k = 0; k < 3; ++k) {
    cpu::sgd_momentum_step(p.data<float>(), a.data<float>(), v.data<float>(), 999, 0.1f, 0.9f);
    cuda::sgd_momentum_step(gp.data<float>(), ga.data<float>(), gv.data<float>(), 999, 0.1f, 0.9f);
  }
  EXPECT_EQ(gp.to_vector(), p.to_vector());  // bit-identical: no FMA on either side (sgd.cu)
  EXPECT_EQ(gv.to_vector(), v.to_vector());
  Tensor z = random_tensor({7, 10}, 14), gz = dev(z), dz = poisoned({7, 10}), gdz = poisoned({7, 10}, Device::CUDA);
  std::vector<int32_t> lab = {0, 1, 2, 3, 4, 5, 9};
  Buffer glab(sizeof(int32_t) * 7, Device::CUDA), grl(sizeof(float) * 7, Device::CUDA), grc(sizeof(int32_t) * 7, Device::CUDA);
  copy_bytes(glab.get(), Device::CUDA, lab.data(), Device::CPU, sizeof(int32_t) * 7);
  int64_t correct = 0;
  const double loss = cpu::softmax_xent(dz.data<float>(), z.data<float>(), lab.data(), 7, 10, &correct);
  cuda::softmax_xent(gdz.data<float>(), static_cast<float*>(grl.get()), static_cast<int32_t*>(grc.get()),
                     gz.data<float>(), static_cast<int32_t*>(glab.get()), 7, 10);
  std::vector<float> rl(7);
  copy_bytes(rl.data(), Device::CPU, grl.get(), Device::CUDA, sizeof(float) * 7);
  double gl = 0;
  for (float x2 : rl) gl += x2;
  EXPECT_NEAR(gl / 7, loss, 1e-5);
  EXPECT_LT(rel_err(gdz.to_vector(), dz.to_vector()), 1e-5);
}

// The row and pooling kernels around the network: add_row_bias, the data pipeline's
// gathers, global average pooling. Bit for bit where the math is one rounding per element.
TEST(CnnCuda, RowAndPoolKernelsMatchCpuTwins) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  for (auto [N, K] : {std::pair<int64_t, int64_t>{1, 1}, {7, 10}, {300, 1001}}) {
    Tensor y = random_tensor({N, K}, 3), bias = random_tensor({K}, 4);
    Tensor gy = y.to(Device::CUDA);
    cpu::add_row_bias(y.data<float>(), bias.data<float>(), N, K);
    cuda::add_row_bias(gy.data<float>(), bias.to(Device::CUDA).data<float>(), N, K);
    EXPECT_EQ(gy.to_vector(), y.to_vector()) << N << "x" << K;
  }
  const int64_t rows = 37, len = 784, count = 100;
  std::vector<int32_t> labels(count);
  for (int64_t i = 0; i < count; ++i) labels[i] = int32_t(i * 7 % 10);
  Tensor idx = Tensor::empty({rows}, Device::CPU, DType::I64);
  for (int64_t i = 0; i < rows; ++i) idx.data<int64_t>()[i] = (i * 31 + 5) % count;
  Tensor gidx = idx.to(Device::CUDA);
  Buffer glabels(sizeof(int32_t) * count, Device::CUDA), gout(sizeof(int32_t) * rows, Device::CUDA);
  copy_bytes(glabels.get(), Device::CUDA, labels.data(), Device::CPU, sizeof(int32_t) * count);
  std::vector<int32_t> out(rows, -1), gout_host(rows, -2);
  cpu::gather_i32(out.data(), labels.data(), idx.data<int64_t>(), rows);
  cuda::gather_i32(static_cast<int32_t*>(gout.get()), static_cast<const int32_t*>(glabels.get()), gidx.data<int64_t>(), rows);
  copy_bytes(gout_host.data(), Device::CPU, gout.get(), Device::CUDA, sizeof(int32_t) * rows);
  EXPECT_EQ(gout_host, out);
  // The byte dataset's gather, normalised and not, by index and in order.
  std::vector<uint8_t> bytes(count * len);
  for (size_t i = 0; i < bytes.size(); ++i) bytes[i] = uint8_t(i * 37 % 256);
  Buffer gbytes(bytes.size(), Device::CUDA);
  copy_bytes(gbytes.get(), Device::CUDA, bytes.data(), Device::CPU, bytes.size());
  for (const PixelScale sc : {PixelScale{}, PixelScale{true, 0.2860f, 0.3530f}})
    for (const bool by_index : {true, false}) {
      Tensor px = poisoned({rows, len}), gpx = poisoned({rows, len}, Device::CUDA);
      cpu::gather_pixels(px.data<float>(), bytes.data(), by_index ? idx.data<int64_t>() : nullptr, rows, len, sc);
      cuda::gather_pixels(gpx.data<float>(), static_cast<const uint8_t*>(gbytes.get()),
                          by_index ? gidx.data<int64_t>() : nullptr, rows, len, sc);
      EXPECT_EQ(gpx.to_vector(), px.to_vector()) << sc.normalize << by_index;  // IEEE division on both
    }
  for (auto [N, HW, C] : {std::tuple<int64_t, int64_t, int64_t>{64, 1, 512}, {16, 4, 512}, {3, 49, 1}, {5, 1000, 3}}) {
    Tensor x = random_tensor({N, HW, C}, 6), dy = random_tensor({N, C}, 7);
    Tensor y = poisoned({N, C}), gy = poisoned({N, C}, Device::CUDA);
    cpu::global_avgpool_forward_nhwc(y.data<float>(), x.data<float>(), N, HW, C);
    cuda::global_avgpool_forward_nhwc(gy.data<float>(), x.to(Device::CUDA).data<float>(), N, HW, C);
    EXPECT_EQ(gy.to_vector(), y.to_vector()) << N << "x" << HW << "x" << C;  // the same sums in the same order
    Tensor dx = poisoned({N, HW, C}), gdx = poisoned({N, HW, C}, Device::CUDA);
    cpu::global_avgpool_backward_nhwc(dx.data<float>(), dy.data<float>(), N, HW, C);
    cuda::global_avgpool_backward_nhwc(gdx.data<float>(), dy.to(Device::CUDA).data<float>(), N, HW, C);
    EXPECT_EQ(gdx.to_vector(), dx.to_vector()) << N << "x" << HW << "x" << C;
  }
}

// The training step's bookkeeping: SGD with momentum over ranges of one flat buffer (one launch
// for a partly frozen model) and the loss sums kept on the device.
TEST(CnnCuda, RangedSgdAndLossSumsMatchCpuTwins) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  ParamRanges r;
  r.count = 3;
  r.begin[0] = 0, r.end[0] = 3136;           // conv1.weight
  r.begin[1] = 5000, r.end[1] = 5000;        // empty
  r.begin[2] = 100000, r.end[2] = 105130;    // fc
  const int64_t n = 110000;
  Tensor p = random_tensor({n}, 1), g = random_tensor({n}, 2), v = random_tensor({n}, 3);
  Tensor gp = p.to(Device::CUDA), gg = g.to(Device::CUDA), gv = v.to(Device::CUDA);
  for (int k = 0; k < 2; ++k) {
    cpu::sgd_momentum_step(p.data<float>(), g.data<float>(), v.data<float>(), r, 0.1f, 0.9f);
    cuda::sgd_momentum_step(gp.data<float>(), gg.data<float>(), gv.data<float>(), r, 0.1f, 0.9f);
  }
  EXPECT_EQ(gp.to_vector(), p.to_vector());  // outside the ranges too: untouched on both
  EXPECT_EQ(gv.to_vector(), v.to_vector());
  Tensor loss = random_tensor({1000}, 4);
  std::vector<int32_t> right(1000);
  for (int i = 0; i < 1000; ++i) right[i] = i % 3 == 0;
  Buffer gright(sizeof(int32_t) * 1000, Device::CUDA);
  copy_bytes(gright.get(), Device::CUDA, right.data(), Device::CPU, sizeof(int32_t) * 1000);
  Tensor gloss = loss.to(Device::CUDA);
  double sums[2] = {1.5, 2}, gsums[2] = {1.5, 2};
  Buffer dsums(sizeof gsums, Device::CUDA);
  copy_bytes(dsums.get(), Device::CUDA, gsums, Device::CPU, sizeof gsums);
  for (int64_t rows : {int64_t(1000), int64_t(7)}) {
    cpu::add_row_sums(sums, loss.data<float>(), right.data(), rows);
    cuda::add_row_sums(static_cast<double*>(dsums.get()), gloss.data<float>(), static_cast<const int32_t*>(gright.get()), rows);
  }
  copy_bytes(gsums, Device::CPU, dsums.get(), Device::CUDA, sizeof gsums);
  EXPECT_NEAR(gsums[0], sums[0], 1e-9 * std::fabs(sums[0]));
  EXPECT_EQ(gsums[1], sums[1]);
}

TEST(CnnCuda, GraphedStepEqualsEagerStep) {
  HG_SKIP_WITHOUT_GPU();
  expect_graphed_steps_equal_eager(Device::CUDA);
}

// The whole network: the same init and batches on both devices give the same losses, weights,
// running statistics and momentum after a few steps, the last on a partial batch (5 images in a
// model sized for 8: new cuDNN plans mid-run). FP32 convolutions by cuDNN's heuristics, then
// chosen by timing (cudnnFind); TF32 ones within TF32's precision.
// Where the CPU and GPU runs of ResNet18TrainsLikeTheCpu may take a branch differently: a ReLU
// whose input lies within rounding of 0, or a max-pool window with a near-tie. Such a flip is no
// bug, but its gradient (g on one side, 0 on the other) reaches every parameter below it, and one
// flip in layer4 (1x1 maps, BatchNorm over 8 rows) moves a momentum buffer by ~1e-2
// (tests/oracle_transfer.py measured it). Levels: 0 the stem (its ReLU and the max-pool), 1 + b
// for block b (layer1.0 = 1 ... layer4.1 = 8), 9 the fc layer, which no branch reaches (the
// forward change of a flip is the near-zero value itself).
static int branch_level(const std::string& name) {
  if (name == "relu" || name.rfind("maxpool", 0) == 0) return 0;
  if (name.rfind("layer", 0) == 0 && name.size() > 7) return 1 + (name[5] - '1') * 2 + (name[7] - '0');
  return 9;
}
static int momentum_level(const std::string& param) {
  if (param.rfind("conv1.", 0) == 0 || param.rfind("bn1.", 0) == 0) return 0;
  return branch_level(param);
}
// The highest level at which two runs' branch decisions (ResNet18::branches) differ; -1 if none.
// Each differing decision must be a near-tie (a wrong forward on one side flips decisions with
// large values, which must fail, not widen what goes uncompared): a ReLU whose positive side is
// within 1e-3 of the tensor's largest value, a max-pool whose two winners (in the stem ReLU's
// output, entry "relu") differ by as little.
static int highest_branch_flip(const StateDict& a, const StateDict& b) {
  int highest = -1;
  const Tensor* stem_relu = nullptr;
  for (const auto& [name, t] : a.entries)
    if (name == "relu") stem_relu = &t;
  for (size_t i = 0; i < a.entries.size(); ++i) {
    const std::string& name = a.entries[i].first;
    const Tensor& ta = a.entries[i].second;
    const Tensor& tb = b.entries[i].second;
    bool differ = false;
    if (ta.dtype() == DType::I64) {
      const float* r = stem_relu->data<float>();
      float scale = 0;
      for (int64_t k = 0; k < stem_relu->numel(); ++k) scale = std::max(scale, std::fabs(r[k]));
      // An index into one image-channel plane of the stem ReLU's output ([N, 64, H, W]).
      const int64_t plane = stem_relu->shape()[2] * stem_relu->shape()[3], pooled = ta.shape()[2] * ta.shape()[3];
      for (int64_t k = 0; k < ta.numel(); ++k) {
        const int64_t wa = ta.data<int64_t>()[k], wb = tb.data<int64_t>()[k];
        if (wa == wb) continue;
        differ = true;
        const float* p = r + (k / pooled) * plane;
        EXPECT_LE(std::fabs(p[wa] - p[wb]), 1e-3f * scale) << name << " element " << k << ": not a near-tie";
      }
    } else {
      float scale = 0;
      for (int64_t k = 0; k < ta.numel(); ++k) scale = std::max(scale, std::fabs(ta.data<float>()[k]));
      for (int64_t k = 0; k < ta.numel(); ++k) {
        const float va = ta.data<float>()[k], vb = tb.data<float>()[k];
        if ((va > 0) == (vb > 0)) continue;
        differ = true;
        EXPECT_LE(std::max(va, vb), 1e-3f * scale) << name << " element " << k << ": not a near-tie";
      }
    }
    if (differ) highest = std::max(highest, branch_level(name));
  }
  return highest;
}

TEST(CnnCuda, ResNet18TrainsLikeTheCpu) {
  HG_SKIP_WITHOUT_GPU();
  const int64_t N = 8;
  Tensor images = random_tensor({N, 1, 28, 28}, 21);
  std::vector<int32_t> labels = {0, 1, 2, 3, 4, 5, 6, 7};
  Tensor gimages = images.to(Device::CUDA);
  Buffer glabels(sizeof(int32_t) * N, Device::CUDA);
  copy_bytes(glabels.get(), Device::CUDA, labels.data(), Device::CPU, sizeof(int32_t) * N);
  struct Mode {
    const char* freeze;
    bool tf32, timed;
    double tol;
  };
  for (const Mode& mode : {Mode{"backbone", false, false, 1e-3}, Mode{"none", false, false, 1e-3},
                           Mode{"none", false, true, 1e-3}, Mode{"none", true, false, 3e-2}}) {
    const std::string what = cat(mode.freeze, mode.tf32 ? " tf32" : "", mode.timed ? " cudnnFind" : "");
    cuda::set_conv_algo_search(mode.timed ? ConvAlgoSearch::Timed : ConvAlgoSearch::Heuristic);
    const int64_t timed_plans_before = cuda::conv_plans_made(ConvAlgoSearch::Timed);
    ResNet18 cpu_model(N, 28, 28), gpu_model(N, 28, 28, Device::CUDA, mode.tf32);
    cpu_model.init_random(3);
    gpu_model.init_random(3);
    cpu_model.set_freeze(mode.freeze);
    gpu_model.set_freeze(mode.freeze);
    int highest_flip = -1;  // over the steps: see momentum_level
    for (int64_t n : {N, N, int64_t(5)}) {
      const double lc = cpu_model.forward(images.data<float>(), labels.data(), n, true, nullptr);
      const double lg = gpu_model.forward(gimages.data<float>(), static_cast<int32_t*>(glabels.get()), n, true, nullptr);
      EXPECT_NEAR(lg, lc, mode.tol * std::max(1.0, std::fabs(lc))) << what << " batch " << n;
      highest_flip = std::max(highest_flip, highest_branch_flip(cpu_model.branches(), gpu_model.branches()));
      cpu_model.backward();
      gpu_model.backward();
      cpu_model.sgd_step(0.01f, 0.9f);
      gpu_model.sgd_step(0.01f, 0.9f);
    }
    const StateDict a = cpu_model.state_dict(), b = gpu_model.state_dict();
    for (size_t i = 0; i < a.entries.size(); ++i) {
      const Tensor& ta = a.entries[i].second;
      const Tensor& tb = b.entries[i].second;
      if (ta.dtype() == DType::I64) {
        EXPECT_EQ(ta.data<int64_t>()[0], tb.data<int64_t>()[0]);
        continue;
      }
      EXPECT_LT(rel_err(tb.to_vector(), ta.to_vector()), mode.tol) << what << " " << a.entries[i].first;
    }
    // The momentum buffers are the gradients summed over the steps: the gradients themselves,
    // where the weights after three small steps are still mostly their initial values. Compared
    // only where no branch the two runs took differently can reach (momentum_level): with the
    // same branches both compute the same piecewise-linear function and differ by rounding alone.
    const StateDict va = cpu_model.momentum_state(), vb = gpu_model.momentum_state();
    ASSERT_EQ(va.entries.size(), vb.entries.size());
    // Below a flip the bound is 10x looser, not gone: a flip moves a buffer by ~1e-2 at most.
    int compared = 0;
    for (size_t i = 0; i < va.entries.size(); ++i) {
      const bool reachable = momentum_level(va.entries[i].first) <= highest_flip;
      compared += !reachable;
      EXPECT_LT(rel_err(vb.entries[i].second.to_vector(), va.entries[i].second.to_vector()),
                (reachable ? 100 : 10) * mode.tol)
          << what << " momentum of " << va.entries[i].first << (reachable ? " (below a branch taken differently)" : "");
    }
    std::printf("  %s: momentum held to the tight bound for %d of %zu parameters (highest branch taken differently: %d)\n",
                what.c_str(), compared, va.entries.size(), highest_flip);
    EXPECT_GE(compared, 2) << what << ": fc.weight and fc.bias are beyond every branch";
    // The timed mode searched (cudnnFind) for its own plans: it did not reuse the heuristics' plans
    // of the same shapes from the modes before it. The others made no timed plan.
    const int64_t timed_plans_made = cuda::conv_plans_made(ConvAlgoSearch::Timed) - timed_plans_before;
    if (mode.timed) EXPECT_GT(timed_plans_made, 0) << what;
    else EXPECT_EQ(timed_plans_made, 0) << what;
  }
  cuda::set_conv_algo_search(ConvAlgoSearch::Heuristic);
  for (const std::string& line : cuda::conv_plans_chosen()) std::printf("  %s\n", line.c_str());
}
#endif

// The list a checkpoint is checked against before it is copied is the model's state dict.
TEST(CnnLayers, StateShapesAreTheModelsStateDict) {
  for (const auto& [cin, classes] : {std::pair<int64_t, int64_t>{1, 10}, {3, 1000}}) {
    const StateDict sd = ResNet18(1, 32, 32, Device::CPU, false, cin, classes).state_dict();
    const auto shapes = resnet18_state_shapes(cin, classes);
    ASSERT_EQ(shapes.size(), sd.entries.size());
    for (size_t i = 0; i < shapes.size(); ++i) {
      EXPECT_EQ(shapes[i].first, sd.entries[i].first);
      EXPECT_EQ(shapes[i].second, sd.entries[i].second.shape()) << shapes[i].first;
    }
  }
}

// The library's per-shape plans are bounded (a process meeting ever new image sizes grew without
// end), and a shape whose plan was dropped is planned again with the weight layout its packed
// weights were written in: the same results, bit for bit.
TEST(CnnLayers, Conv2dPlansAreBoundedAndReplannedAlike) {
  const Conv2dShape s{2, 8, 6, 5, 16, 3, 3, 1, 1};
  const Tensor x = random_tensor({2 * 6 * 5 * 8}, 41), w = random_tensor({16 * 8 * 3 * 3}, 42);
  std::vector<float> packed(std::max<int64_t>(cpu::conv2d_nhwc_packed_floats(s), 1));
  cpu::conv2d_nhwc_pack_weights(packed.data(), w.data<float>(), s);  // packed once, as Conv2d does
  auto forward = [&] {
    Tensor ws = poisoned({std::max<int64_t>(cpu::conv2d_nhwc_workspace_floats(s), 1)});
    std::vector<float> y = nan_vector(2 * 6 * 5 * 16);
    cpu::conv2d_forward_nhwc(y.data(), x.data<float>(), w.data<float>(), packed.data(), s, ws.data<float>());
    return y;
  };
  const std::vector<float> before = forward();
  for (int64_t h = 1; h <= 300; ++h) {
    (void)cpu::conv2d_nhwc_workspace_floats({1, 1, h, 1, 1, 1, 1, 1, 0});
    ASSERT_LE(cpu::conv2d_nhwc_plans_kept(), 128);
  }
  if (cpu::conv2d_nhwc_backend().rfind("oneDNN", 0) == 0) EXPECT_GT(cpu::conv2d_nhwc_plans_kept(), 0);
  EXPECT_EQ(before, forward());  // replanned, reading the weights packed before
}

// A model sized for other images takes another's weights, running statistics and counters as a
// state dict would carry them.
TEST(CnnLayers, CopyWeightsIsAStateDictRoundTrip) {
  ResNet18 from(4, 28, 28), to(2, 40, 36);
  from.init_random(5);
  Tensor images = random_tensor({4, 1, 28, 28}, 6);
  const std::vector<int32_t> labels = {1, 2, 3, 4};
  from.forward(images.data<float>(), labels.data(), 4, true, nullptr);  // running stats and counters move
  to.init_random(6);
  to.copy_weights(from);
  const StateDict a = from.state_dict(), b = to.state_dict();
  ASSERT_EQ(a.entries.size(), b.entries.size());
  for (size_t i = 0; i < a.entries.size(); ++i) {
    const Tensor &x = a.entries[i].second, &y = b.entries[i].second;
    ASSERT_EQ(x.nbytes(), y.nbytes());
    EXPECT_EQ(std::memcmp(x.raw(), y.raw(), x.nbytes()), 0) << a.entries[i].first;
  }
}

// The last batch of an epoch is smaller than the batch the model was sized for: a model sized
// for 8 must train on 5 images exactly as a model sized for 5.
TEST(CnnLayers, ResNet18PartialBatchEqualsSmallerModel) {
  Tensor images = random_tensor({5, 1, 28, 28}, 31);
  const std::vector<int32_t> labels = {3, 1, 4, 1, 5};
  ResNet18 big(8, 28, 28), small(5, 28, 28);
  big.init_random(9);
  small.init_random(9);
  for (int step = 0; step < 2; ++step) {
    const double a = big.forward(images.data<float>(), labels.data(), 5, true, nullptr);
    const double b = small.forward(images.data<float>(), labels.data(), 5, true, nullptr);
    EXPECT_EQ(a, b);
    big.backward();
    small.backward();
    big.sgd_step(0.01f, 0.9f);
    small.sgd_step(0.01f, 0.9f);
  }
  const StateDict x = big.state_dict(), y = small.state_dict();
  for (size_t i = 0; i < x.entries.size(); ++i) {
    if (x.entries[i].second.dtype() == DType::F32) {
      EXPECT_EQ(x.entries[i].second.to_vector(), y.entries[i].second.to_vector()) << x.entries[i].first;
    }
  }
}

// The loss sums of a logging window survive an evaluation in the middle of it (an epoch that
// ends between two log points), and forward() reports its own batch only.
TEST(CnnLayers, ResNet18LossSumsSurviveAnEvaluation) {
  Tensor images = random_tensor({4, 1, 28, 28}, 51);
  const std::vector<int32_t> labels = {1, 2, 3, 4};
  ResNet18 model(4, 28, 28), twin(4, 28, 28);  // the same history, without a pending window
  for (ResNet18* m : {&model, &twin}) {
    m->init_random(2);
    m->enqueue_forward(images.data<float>(), labels.data(), 3, true);
  }
  const ResNet18::Sums want = twin.take_sums();
  int64_t c1 = -1, c2 = -2;
  const double eval = model.forward(images.data<float>(), labels.data(), 4, false, &c1);
  EXPECT_EQ(eval, twin.forward(images.data<float>(), labels.data(), 4, false, &c2));
  EXPECT_EQ(c1, c2);
  const ResNet18::Sums window = model.take_sums();
  EXPECT_EQ(window.images, 3);
  EXPECT_EQ(window.loss, want.loss);
  EXPECT_EQ(window.correct, want.correct);
  EXPECT_EQ(model.take_sums().images, 0);
}
