#include "host/gradcheck.h"

#include <algorithm>
#include <cmath>
#include <functional>

#include "host/nn.h"
#include "host/random.h"
#include "host/tensor.h"
#include "kernels/einsum/gemm.h"
#include "kernels/nn/conv2d.h"
#include "kernels/nn/linear_row.h"
#include "kernels/nn/mse.h"
#include "kernels/nn/relu.h"
#include "kernels/nn/xent.h"
#include "kernels/philox.h"
#include "kernels/random/random.h"

namespace handgrad {

namespace {

constexpr double kTolerance = 1e-3;  // float32 kernels against float64 finite differences

std::vector<float> randn_vec(int64_t n, uint64_t seed, uint64_t stream) {
  std::vector<float> v(n);
  cpu::fill_normal(v.data(), n, seed, stream, 0);
  return v;
}

// Uploads to the device, runs fn on device pointers, downloads `out` (all float arrays).
struct DeviceRun {
  Device dev;
  std::vector<Tensor> held;
  float* put(const std::vector<float>& v) {
    held.push_back(Tensor::from_vector({static_cast<int64_t>(v.size())}, v, dev));
    return held.back().data<float>();
  }
  float* out(int64_t n) {
    held.push_back(Tensor::full({n}, NAN, dev));
    return held.back().data<float>();
  }
  std::vector<float> get(const float* p, int64_t n) const {
    std::vector<float> v(n);
    copy_bytes(v.data(), Device::CPU, p, dev, sizeof(float) * n);
    return v;
  }
};

// max |analytic - fd| / max |fd| over `samples` random coordinates of `theta`, where fd is the
// central difference of the float64 loss `f` in that coordinate.
double fd_error(std::vector<double> theta, const std::vector<float>& analytic,
                const std::function<double(const std::vector<double>&)>& f, uint64_t seed, int samples = 48) {
  const Philox rng(seed, 77);
  double err = 0, scale = 1e-12;
  const int64_t n = static_cast<int64_t>(theta.size());
  for (int s = 0; s < std::min<int64_t>(samples, n); ++s) {
    const int64_t i = samples >= n ? s : static_cast<int64_t>(rng.uniform_int(s, n));
    const double keep = theta[i], h = 1e-6 * std::max(1.0, std::fabs(keep));
    theta[i] = keep + h;
    const double up = f(theta);
    theta[i] = keep - h;
    const double down = f(theta);
    theta[i] = keep;
    const double fd = (up - down) / (2 * h);
    scale = std::max(scale, std::fabs(fd));
    err = std::max(err, std::fabs(fd - analytic[i]));
  }
  return err / scale;
}

std::vector<double> to_double(const std::vector<float>& v) { return std::vector<double>(v.begin(), v.end()); }

GradcheckResult result(const std::string& op, const std::string& what, double worst) {
  return {op, what, worst, kTolerance, worst < kTolerance};
}

void check_linear(Device dev, uint64_t seed, std::vector<GradcheckResult>& out) {
  // Y = X W, L = sum(G * Y): dL/dY = G, dL/dW = X^T G, dL/dX = G W^T.
  const int64_t N = 7, D = 5, H = 6;
  const auto X = randn_vec(N * D, seed, 1), W = randn_vec(D * H, seed, 2), G = randn_vec(N * H, seed, 3);
  DeviceRun run{dev, {}};
  float *x = run.put(X), *w = run.put(W), *g = run.put(G), *dw = run.out(D * H), *dx = run.out(N * D);
  GemmShape s1;  // dW [D, H] = X^T [D, N] G [N, H]
  s1.M = D, s1.N = H, s1.K = N, s1.trans_a = true, s1.lda = D, s1.ldb = H;
  GemmShape s2;  // dX [N, D] = G [N, H] W^T [H, D]
  s2.M = N, s2.N = D, s2.K = H, s2.trans_b = true, s2.lda = H, s2.ldb = H;
  nn::gemm(dev, dw, x, g, s1);
  nn::gemm(dev, dx, g, w, s2);
  const auto DW = run.get(dw, D * H), DX = run.get(dx, N * D);
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww) {
    double l = 0;
    for (int64_t n = 0; n < N; ++n)
      for (int64_t h = 0; h < H; ++h) {
        double y = 0;
        for (int64_t d = 0; d < D; ++d) y += xx[n * D + d] * ww[d * H + h];
        l += G[n * H + h] * y;
      }
    return l;
  };
  const auto Xd = to_double(X), Wd = to_double(W);
  out.push_back(result("linear", "dL/dW vs finite differences", fd_error(Wd, DW, [&](const auto& t) { return loss(Xd, t); }, seed)));
  out.push_back(result("linear", "dL/dX vs finite differences", fd_error(Xd, DX, [&](const auto& t) { return loss(t, Wd); }, seed)));
  // The identity itself: X^T dL/dY, summed in double.
  double err = 0, scale = 1e-12;
  for (int64_t d = 0; d < D; ++d)
    for (int64_t h = 0; h < H; ++h) {
      double want = 0;
      for (int64_t n = 0; n < N; ++n) want += double(X[n * D + d]) * G[n * H + h];
      err = std::max(err, std::fabs(want - DW[d * H + h]));
      scale = std::max(scale, std::fabs(want));
    }
  out.push_back(result("linear", "dL/dW vs X^T dL/dY", err / scale));
  // Q2's batch-1 kernels: dW = x^T dy (one row of X).
  float* dw1 = run.out(D * H);
  const LinearRowShape ls{1, D, H, D * H};
  nn::linear_row_backward_weight(dev, dw1, RowSource{x}, g, ls);
  const auto DW1 = run.get(dw1, D * H);
  auto loss1 = [&](const std::vector<double>& ww) {
    double l = 0;
    for (int64_t h = 0; h < H; ++h) {
      double y = 0;
      for (int64_t d = 0; d < D; ++d) y += Xd[d] * ww[d * H + h];
      l += G[h] * y;
    }
    return l;
  };
  out.push_back(result("linear", "batch-1 dL/dW (Q2 kernel) vs finite differences", fd_error(Wd, DW1, loss1, seed)));
}

void check_relu(Device dev, uint64_t seed, std::vector<GradcheckResult>& out) {
  const int64_t n = 200;
  auto X = randn_vec(n, seed, 4);
  for (float& v : X) v = v >= 0 ? v + 0.05f : v - 0.05f;  // away from the kink
  const auto G = randn_vec(n, seed, 5);
  DeviceRun run{dev, {}};
  float *x = run.put(X), *g = run.put(G), *dx = run.out(n);
  nn::relu_backward(dev, dx, g, x, n);
  auto loss = [&](const std::vector<double>& t) {
    double l = 0;
    for (int64_t i = 0; i < n; ++i) l += G[i] * std::max(t[i], 0.0);
    return l;
  };
  out.push_back(result("relu", "dL/dx vs finite differences", fd_error(to_double(X), run.get(dx, n), loss, seed, 200)));
}

void check_mse(Device dev, uint64_t seed, std::vector<GradcheckResult>& out) {
  const int64_t M = 9;
  const auto Yh = randn_vec(M, seed, 6), Y = randn_vec(M, seed, 7);
  DeviceRun run{dev, {}};
  float *yh = run.put(Yh), *y = run.put(Y), *dy = run.out(M), *log = run.out(M);
  Tensor step = Tensor::zeros({1}, dev, DType::I64);
  const RowSource target{y, 1};
  nn::mse_loss_grad(dev, log, 1, step.data<int64_t>(), dy, yh, target, M);
  auto loss = [&](const std::vector<double>& t) {
    double l = 0;
    for (int64_t m = 0; m < M; ++m) l += (t[m] - Y[m]) * (t[m] - Y[m]);
    return l;
  };
  out.push_back(result("mse", "d(yhat - y)^2 / dyhat vs finite differences", fd_error(to_double(Yh), run.get(dy, M), loss, seed, M)));
}

void check_xent(Device dev, uint64_t seed, std::vector<GradcheckResult>& out) {
  const int64_t N = 6, K = 10;
  const auto Z = randn_vec(N * K, seed, 8);
  std::vector<int32_t> labels(N);
  for (int64_t i = 0; i < N; ++i) labels[i] = static_cast<int32_t>((i * 7) % K);
  DeviceRun run{dev, {}};
  float *z = run.put(Z), *dz = run.out(N * K);
  // The ResNet's loss layer, as it runs it (the summed loss stays on the device).
  Buffer lab(sizeof(int32_t) * N, dev), sums(2 * sizeof(double), dev), rc(sizeof(int32_t) * N, dev);
  copy_bytes(lab.get(), dev, labels.data(), Device::CPU, sizeof(int32_t) * N);
  zero_bytes(sums.get(), dev, sums.bytes());
  nn::softmax_xent(dev, dz, static_cast<double*>(sums.get()), run.out(N), static_cast<int32_t*>(rc.get()), z,
                   static_cast<int32_t*>(lab.get()), N, K);
  auto loss = [&](const std::vector<double>& t) {
    double l = 0;
    for (int64_t n = 0; n < N; ++n) {
      double mx = -1e300, se = 0;
      for (int64_t k = 0; k < K; ++k) mx = std::max(mx, t[n * K + k]);
      for (int64_t k = 0; k < K; ++k) se += std::exp(t[n * K + k] - mx);
      l += mx + std::log(se) - t[n * K + labels[n]];
    }
    return l / N;
  };
  out.push_back(result("xent", "d mean cross-entropy / dlogits vs finite differences",
                       fd_error(to_double(Z), run.get(dz, N * K), loss, seed, N * K)));
}

// The ResNet's convolution layer (channels-last x and dy, KCRS weights), as it runs it.
void check_conv(Device dev, uint64_t seed, std::vector<GradcheckResult>& out) {
  const Conv2dShape s{2, 3, 7, 6, 4, 3, 3, 2, 1};
  const int64_t nx = s.N * s.C * s.H * s.W, nw = s.K * s.C * s.R * s.S, ny = s.N * s.K * s.OH() * s.OW();
  const auto X = randn_vec(nx, seed, 9), W = randn_vec(nw, seed, 10), G = randn_vec(ny, seed, 11);
  DeviceRun run{dev, {}};
  float *x = run.put(X), *w = run.put(W), *g = run.put(G), *dx = run.out(nx), *dw = run.out(nw);
  nn::Conv2d conv(s, dev, false);
  float* ws = run.out(std::max<int64_t>(1, conv.workspace_floats()));
  conv.backward_data(dx, g, w, ws);
  conv.backward_filter(dw, g, x, ws);
  auto loss = [&](const std::vector<double>& xx, const std::vector<double>& ww) {
    double l = 0;
    for (int64_t n = 0; n < s.N; ++n)
      for (int64_t k = 0; k < s.K; ++k)
        for (int64_t oy = 0; oy < s.OH(); ++oy)
          for (int64_t ox = 0; ox < s.OW(); ++ox) {
            double y = 0;
            for (int64_t c = 0; c < s.C; ++c)
              for (int64_t r = 0; r < s.R; ++r)
                for (int64_t q = 0; q < s.S; ++q) {
                  const int64_t iy = oy * s.stride - s.pad + r, ix = ox * s.stride - s.pad + q;
                  if (iy < 0 || iy >= s.H || ix < 0 || ix >= s.W) continue;
                  y += ww[((k * s.C + c) * s.R + r) * s.S + q] * xx[((n * s.H + iy) * s.W + ix) * s.C + c];
                }
            l += G[((n * s.OH() + oy) * s.OW() + ox) * s.K + k] * y;
          }
    return l;
  };
  const auto Xd = to_double(X), Wd = to_double(W);
  out.push_back(result("conv", "dL/dx vs finite differences", fd_error(Xd, run.get(dx, nx), [&](const auto& t) { return loss(t, Wd); }, seed)));
  out.push_back(result("conv", "dL/dw vs finite differences", fd_error(Wd, run.get(dw, nw), [&](const auto& t) { return loss(Xd, t); }, seed)));
}

}  // namespace

std::vector<GradcheckResult> run_gradcheck(const std::string& which, Device device, uint64_t seed) {
  static const std::vector<std::pair<std::string, void (*)(Device, uint64_t, std::vector<GradcheckResult>&)>> ops = {
      {"linear", check_linear}, {"relu", check_relu}, {"mse", check_mse}, {"xent", check_xent}, {"conv", check_conv}};
  std::vector<GradcheckResult> out;
  bool found = false;
  for (const auto& [name, fn] : ops)
    if (which == "all" || which == name) {
      fn(device, seed, out);
      found = true;
    }
  HG_REQUIRE(found, "gradcheck: unknown op '", which, "' (linear, relu, mse, xent, conv or all)");
  return out;
}

}  // namespace handgrad
