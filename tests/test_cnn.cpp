// Q3's CPU layers against naive float64 loops.
#include <gtest/gtest.h>

#include "kernels/nn/batchnorm.h"
#include "kernels/nn/conv2d.h"
#include "kernels/nn/pooling.h"
#include "kernels/nn/xent.h"
#include "test_util.h"

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
    const std::string what = cat("N=", s.N, " C=", s.C, " H=", s.H, " K=", s.K, " R=", s.R, " stride=", s.stride);
    EXPECT_LT(rel_err(y.to_vector(), ry), 1e-5) << what;
    EXPECT_LT(rel_err(dx.to_vector(), rdx), 1e-5) << what;
    EXPECT_LT(rel_err(dw.to_vector(), rdw), 1e-5) << what;
  }
}
