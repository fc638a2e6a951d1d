// Q2: the per-step kernels against naive loops, their composition against the CPU trainer, and
// every CUDA implementation against the CPU (skipped without a GPU).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>

#include "kernels/mlp/mlp_train.h"
#include "kernels/nn/linear_row.h"
#include "kernels/nn/mse.h"
#include "kernels/nn/relu.h"
#include "kernels/optim/sgd.h"
#include "models/mlp.h"
#include "test_util.h"

using namespace handgrad;
using test::poisoned;
using test::random_tensor;
using test::rel_err;

TEST(MlpKernels, ReluForwardBackwardUseTheCoursesDerivative) {
  Tensor x = Tensor::from_vector({5}, {-1.f, 0.f, 2.f, -0.f, 3.f});
  Tensor dy = Tensor::from_vector({5}, {10.f, 20.f, 30.f, 40.f, 50.f});
  Tensor y = poisoned({5}), dx = poisoned({5});
  cpu::relu_forward(y.data<float>(), x.data<float>(), 5);
  cpu::relu_backward(dx.data<float>(), dy.data<float>(), x.data<float>(), 5);
  EXPECT_EQ(y.to_vector(), (std::vector<float>{0, 0, 2, 0, 3}));
  EXPECT_EQ(dx.to_vector(), (std::vector<float>{0, 20, 30, 40, 50}));  // relu'(0) = 1
}

TEST(MlpKernels, LinearRowAgainstLoops) {
  const int64_t M = 3, K = 7, N = 5, rows = 4;
  Tensor X = random_tensor({rows, K}, 1), W = random_tensor({M, K * N + 2}, 2), dy = random_tensor({M, N}, 3);
  const int64_t idx[1] = {2}, step = 0;
  const RowSource x{X.data<float>(), 0, idx, &step, K};
  const LinearRowShape s{M, K, N, K * N + 2};
  Tensor y = poisoned({M, N}), dW = Tensor::zeros({M, K * N + 2}), dx = poisoned({M, K});
  cpu::linear_row_forward(y.data<float>(), x, W.data<float>(), s);
  cpu::linear_row_backward_weight(dW.data<float>(), x, dy.data<float>(), s);
  cpu::linear_row_backward_input(dx.data<float>(), dy.data<float>(), W.data<float>(), s);
  const float* xr = X.data<float>() + 2 * K;
  for (int64_t m = 0; m < M; ++m) {
    const float* w = W.data<float>() + m * s.w_stride;
    for (int64_t n = 0; n < N; ++n) {
      double acc = 0;
      for (int64_t k = 0; k < K; ++k) acc += double(xr[k]) * w[k * N + n];
      EXPECT_NEAR(y.to_vector()[m * N + n], acc, 1e-5);
    }
    for (int64_t k = 0; k < K; ++k) {
      double acc = 0;
      for (int64_t n = 0; n < N; ++n) {
        EXPECT_FLOAT_EQ(dW.to_vector()[m * s.w_stride + k * N + n], xr[k] * dy.to_vector()[m * N + n]);
        acc += double(dy.to_vector()[m * N + n]) * w[k * N + n];
      }
      EXPECT_NEAR(dx.to_vector()[m * K + k], acc, 1e-5);
    }
  }
}

TEST(MlpKernels, MseAndSgd) {
  Tensor yhat = Tensor::from_vector({2}, {1.5f, -1.f}), Y = Tensor::from_vector({3}, {0.f, 0.5f, 2.f});
  const int64_t idx[2] = {2, 1}, step = 1;  // step 1 samples row 1 (y = 0.5)
  Tensor log = poisoned({2, 4}), dy = poisoned({2});
  cpu::mse_loss_grad(log.data<float>(), 4, &step, dy.data<float>(), yhat.data<float>(),
                     RowSource{Y.data<float>(), 0, idx, &step, 1}, 2);
  EXPECT_FLOAT_EQ(log.to_vector()[1], 1.0f);      // (1.5 - 0.5)^2
  EXPECT_FLOAT_EQ(log.to_vector()[4 + 1], 2.25f);  // (-1 - 0.5)^2
  EXPECT_EQ(dy.to_vector(), (std::vector<float>{2.f, -3.f}));
  Tensor p = Tensor::from_vector({2, 2}, {1, 2, 3, 4}), g = Tensor::from_vector({2, 2}, {1, 1, 2, 2});
  const float lr[2] = {0.5f, 0.25f};
  cpu::sgd_step(p.data<float>(), g.data<float>(), lr, 2, 2);
  EXPECT_EQ(p.to_vector(), (std::vector<float>{0.5f, 1.5f, 2.5f, 3.5f}));
}

namespace {
// A small problem: data, weights and indices from Philox.
struct SmallProblem {
  int64_t models, n = 37, d = 9, h = 13, iters = 400;
  Tensor X = random_tensor({37, 9}, 11), Y = random_tensor({37}, 12);
  Tensor W1 = random_tensor({9, 13}, 13), W2 = random_tensor({13}, 14);
  Tensor idx = Tensor::empty({400}, Device::CPU, DType::I64);
  std::vector<float> lrs;
  explicit SmallProblem(std::vector<float> l) : models(int64_t(l.size())), lrs(std::move(l)) {
    fill_uniform_int(idx, uint64_t(n), 5, 5);
  }
  MlpRun run() const {
    MlpRun r;
    r.models = models, r.n = n, r.d = d, r.h = h, r.iters = iters;
    r.X = X.data<float>(), r.Y = Y.data<float>(), r.indices = idx.data<int64_t>(), r.lr = lrs.data();
    return r;
  }
  Tensor params() const {
    const int64_t P = mlp_param_count(d, h);
    Tensor p = Tensor::empty({models, P});
    for (int64_t m = 0; m < models; ++m) {
      std::copy_n(W1.data<float>(), d * h, p.data<float>() + m * P);
      std::copy_n(W2.data<float>(), h, p.data<float>() + m * P + d * h);
    }
    return p;
  }
};
}  // namespace

// The step kernels, composed as the GPU "kernels" trainer composes them, give the CPU trainer's
// trajectory: the decomposition itself is right, independently of any GPU.
TEST(MlpTrain, StepKernelsComposeToTheTrainer) {
  SmallProblem pb({0.01f, 0.002f});
  const MlpRun r = pb.run();
  const int64_t D = r.d, H = r.h, M = r.models, P = mlp_param_count(D, H);
  Tensor ref_params = pb.params(), ref_losses = poisoned({M, r.iters});
  std::vector<int64_t> diverged(M);
  cpu::mlp_train(ref_params.data<float>(), ref_losses.data<float>(), diverged.data(), r);
  EXPECT_EQ(diverged, (std::vector<int64_t>{-1, -1}));

  Tensor params = pb.params(), grads = Tensor::zeros({M, P}), losses = poisoned({M, r.iters});
  Tensor a = poisoned({M, H}), act = poisoned({M, H}), dact = poisoned({M, H}), da = poisoned({M, H});
  Tensor yhat = poisoned({M}), dy = poisoned({M});
  int64_t step = 0;
  const RowSource x{r.X, 0, r.indices, &step, D}, y{r.Y, 0, r.indices, &step, 1}, acts{act.data<float>(), H};
  const LinearRowShape l1{M, D, H, P}, l2{M, H, 1, P};
  float* W1 = params.data<float>();
  float* W2 = W1 + D * H;
  for (step = 0; step < r.iters; ++step) {
    cpu::linear_row_forward(a.data<float>(), x, W1, l1);
    cpu::relu_forward(act.data<float>(), a.data<float>(), M * H);
    cpu::linear_row_forward(yhat.data<float>(), acts, W2, l2);
    cpu::mse_loss_grad(losses.data<float>(), r.iters, &step, dy.data<float>(), yhat.data<float>(), y, M);
    cpu::linear_row_backward_weight(grads.data<float>() + D * H, acts, dy.data<float>(), l2);
    cpu::linear_row_backward_input(dact.data<float>(), dy.data<float>(), W2, l2);
    cpu::relu_backward(da.data<float>(), dact.data<float>(), a.data<float>(), M * H);
    cpu::linear_row_backward_weight(grads.data<float>(), x, da.data<float>(), l1);
    cpu::sgd_step(W1, grads.data<float>(), r.lr, M, P);
  }
  EXPECT_LT(rel_err(losses.to_vector(), ref_losses.to_vector()), 1e-4);
  EXPECT_LT(rel_err(params.to_vector(), ref_params.to_vector()), 1e-4);
}

// The one-pass trainer (step t's update fused with step t+1's forward) gives the two-pass
// trainer's bits: losses, weights and divergence points, for an odd hidden size, a sweep with a
// diverging model, and the default problem's shape, on whichever clone this CPU runs.
TEST(MlpTrain, OnePassEqualsTwoPassBitForBit) {
  for (const std::vector<float>& lrs : {std::vector<float>{0.01f}, std::vector<float>{10.f, 1e-3f, 1e-4f}}) {
    SmallProblem pb(lrs);
    for (int64_t h : {13, 64}) {
      pb.h = h, pb.d = h == 64 ? 64 : 9;
      pb.W1 = random_tensor({pb.d, h}, 13), pb.W2 = random_tensor({h}, 14), pb.X = random_tensor({pb.n, pb.d}, 11);
      const MlpRun r = pb.run();
      Tensor p1 = pb.params(), p2 = pb.params(), l1 = poisoned({r.models, r.iters}), l2 = poisoned({r.models, r.iters});
      std::vector<int64_t> d1(r.models, 7), d2(r.models, 7);
      cpu::mlp_train(p1.data<float>(), l1.data<float>(), d1.data(), r);
      cpu::mlp_train_two_pass(p2.data<float>(), l2.data<float>(), d2.data(), r);
      EXPECT_EQ(d1, d2);
      EXPECT_EQ(0, std::memcmp(p1.raw(), p2.raw(), p1.nbytes())) << "h=" << h;
      EXPECT_EQ(0, std::memcmp(l1.raw(), l2.raw(), l1.nbytes())) << "h=" << h;
      if (lrs.size() == 3) {
        EXPECT_GE(d1[0], 0);  // the sweep's lr 10 diverges
      }
    }
  }
}

TEST(MlpTrain, DivergenceStopsTheModelAndIsReported) {
  SmallProblem pb({10.f, 1e-4f});
  const MlpRun r = pb.run();
  Tensor params = pb.params(), losses = poisoned({r.models, r.iters});
  std::vector<int64_t> diverged(r.models);
  cpu::mlp_train(params.data<float>(), losses.data<float>(), diverged.data(), r);
  ASSERT_GE(diverged[0], 0);
  EXPECT_EQ(diverged[1], -1);
  const std::vector<float> l = losses.to_vector();
  EXPECT_FALSE(l[diverged[0]] <= kDivergedLoss);
  for (int64_t t = diverged[0] + 1; t < r.iters; ++t) EXPECT_TRUE(std::isnan(l[t]));
  for (int64_t t = 0; t < r.iters; ++t) EXPECT_TRUE(std::isfinite(l[r.iters + t]));
}

TEST(MlpTrain, RunMlpChecksItsInput) {
  MlpConfig c;
  c.write_files = false;
  c.iters = 0;
  EXPECT_THROW(run_mlp(c), UserError);
  c = MlpConfig();
  c.write_files = false;
  c.lrs = {-1.f};
  EXPECT_THROW(run_mlp(c), UserError);
  c.lrs = {1e-4f};
  c.h = 0;
  EXPECT_THROW(run_mlp(c), UserError);
  c.h = 8;
  c.impl = "fused";  // a GPU implementation on the CPU device
  EXPECT_THROW(run_mlp(c), UserError);
  c.impl = "auto";
  c.lrs = {5.f};
  c.iters = 1000;
  EXPECT_THROW(run_mlp(c), UserError);  // diverges
}

TEST(MlpTrain, SameSeedSameRun) {
  MlpConfig c;
  c.write_files = false;
  c.iters = 3000;
  c.lrs = {1e-4f, 1e-5f};
  const MlpResult a = run_mlp(c), b = run_mlp(c);
  EXPECT_EQ(a.models[0].losses, b.models[0].losses);
  EXPECT_EQ(a.models[1].params, b.models[1].params);
  EXPECT_LT(a.models[0].last1000_mean, a.models[0].losses[0]);  // it learns
}

#ifdef HANDGRAD_WITH_CUDA
TEST(MlpCuda, StepKernelsMatchCpuTwins) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  const int64_t M = 3, K = 70, N = 300, rows = 5;
  Tensor X = random_tensor({rows, K}, 1), W = random_tensor({M, K * N}, 2), dy = random_tensor({M, N}, 3);
  Tensor idx_h = Tensor::empty({2}, Device::CPU, DType::I64), step_h = Tensor::zeros({1}, Device::CPU, DType::I64);
  idx_h.data<int64_t>()[0] = 3, idx_h.data<int64_t>()[1] = 1;
  step_h.data<int64_t>()[0] = 1;
  Tensor dX = X.to(Device::CUDA), dW = W.to(Device::CUDA), ddy = dy.to(Device::CUDA);
  Tensor didx = idx_h.to(Device::CUDA), dstep = step_h.to(Device::CUDA);
  const LinearRowShape s{M, K, N, K * N};
  const RowSource hx{X.data<float>(), 0, idx_h.data<int64_t>(), step_h.data<int64_t>(), K};
  const RowSource gx{dX.data<float>(), 0, didx.data<int64_t>(), dstep.data<int64_t>(), K};
  Tensor y1 = poisoned({M, N}), y2 = poisoned({M, N}, Device::CUDA);
  cpu::linear_row_forward(y1.data<float>(), hx, W.data<float>(), s);
  cuda::linear_row_forward(y2.data<float>(), gx, dW.data<float>(), s);
  EXPECT_LT(rel_err(y2.to_vector(), y1.to_vector()), 1e-5);
  Tensor g1 = poisoned({M, K * N}), g2 = poisoned({M, K * N}, Device::CUDA);
  cpu::linear_row_backward_weight(g1.data<float>(), hx, dy.data<float>(), s);
  cuda::linear_row_backward_weight(g2.data<float>(), gx, ddy.data<float>(), s);
  EXPECT_EQ(g2.to_vector(), g1.to_vector());
  Tensor x1 = poisoned({M, K}), x2 = poisoned({M, K}, Device::CUDA);
  cpu::linear_row_backward_input(x1.data<float>(), dy.data<float>(), W.data<float>(), s);
  cuda::linear_row_backward_input(x2.data<float>(), ddy.data<float>(), dW.data<float>(), s);
  EXPECT_LT(rel_err(x2.to_vector(), x1.to_vector()), 1e-5);
  // relu, mse, sgd
  Tensor v = random_tensor({1001}, 4), dv = v.to(Device::CUDA), gv = random_tensor({1001}, 5), dgv = gv.to(Device::CUDA);
  Tensor r1 = poisoned({1001}), r2 = poisoned({1001}, Device::CUDA);
  cpu::relu_forward(r1.data<float>(), v.data<float>(), 1001);
  cuda::relu_forward(r2.data<float>(), dv.data<float>(), 1001);
  EXPECT_EQ(r2.to_vector(), r1.to_vector());
  cpu::relu_backward(r1.data<float>(), gv.data<float>(), v.data<float>(), 1001);
  cuda::relu_backward(r2.data<float>(), dgv.data<float>(), dv.data<float>(), 1001);
  EXPECT_EQ(r2.to_vector(), r1.to_vector());
  Tensor yh = random_tensor({M}, 6), dyh = yh.to(Device::CUDA);
  Tensor l1 = poisoned({M, 2}), l2 = poisoned({M, 2}, Device::CUDA), e1 = poisoned({M}), e2 = poisoned({M}, Device::CUDA);
  cpu::mse_loss_grad(l1.data<float>(), 2, step_h.data<int64_t>(), e1.data<float>(), yh.data<float>(), RowSource{X.data<float>(), 0, idx_h.data<int64_t>(), step_h.data<int64_t>(), K}, M);
  cuda::mse_loss_grad(l2.data<float>(), 2, dstep.data<int64_t>(), e2.data<float>(), dyh.data<float>(), RowSource{dX.data<float>(), 0, didx.data<int64_t>(), dstep.data<int64_t>(), K}, M);
  EXPECT_EQ(e2.to_vector(), e1.to_vector());
  for (int64_t m = 0; m < M; ++m) EXPECT_EQ(l2.to_vector()[m * 2 + 1], l1.to_vector()[m * 2 + 1]);
  const std::vector<float> lrs = {0.1f, 0.2f, 0.3f};
  Tensor lr = Tensor::from_vector({3}, lrs, Device::CUDA);
  Tensor p1 = random_tensor({3, 333}, 7), p2 = p1.to(Device::CUDA), gg = random_tensor({3, 333}, 8), dgg = gg.to(Device::CUDA);
  cpu::sgd_step(p1.data<float>(), gg.data<float>(), lrs.data(), 3, 333);
  cuda::sgd_step(p2.data<float>(), dgg.data<float>(), lr.data<float>(), 3, 333, dstep.data<int64_t>());
  EXPECT_EQ(p2.to_vector(), p1.to_vector());
  EXPECT_EQ(dstep.to(Device::CPU).data<int64_t>()[0], 2);  // advanced once
}

// The fused kernel with its weights in more than 48 KB of shared memory (the opt-in limit) and
// more hidden units than threads in a block (h = 1500 > 1024: threads take several units).
TEST(MlpCuda, FusedBeyond48KBAndWideHidden) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  MlpConfig c;
  c.write_files = false;
  c.n = 200, c.d = 16, c.h = 1500, c.iters = 600;  // (16 + 1) * 1500 floats of weights: 102 KB
  c.lrs = {1e-5f, 3e-6f};
  c.device = Device::CPU;
  const MlpResult ref = run_mlp(c);
  c.device = Device::CUDA;
  c.impl = "fused";
  const MlpResult got = run_mlp(c);
  ASSERT_EQ(got.impl, "fused");
  for (size_t m = 0; m < 2; ++m) {
    EXPECT_EQ(got.models[m].diverged_at, ref.models[m].diverged_at);
    EXPECT_LT(rel_err(got.models[m].losses, ref.models[m].losses), 1e-3) << "lr " << c.lrs[m];
    EXPECT_LT(rel_err(got.models[m].params, ref.models[m].params), 1e-3) << "lr " << c.lrs[m];
  }
}

TEST(MlpCuda, EveryImplementationMatchesTheCpu) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  // 1234 iterations: the graph replays two blocks of 500 after an eager first step, and runs the
  // remaining 233 step by step.
  for (int64_t iters : {2000, 1234}) {
    MlpConfig c;
    c.write_files = false;
    c.iters = iters;
    c.lrs = {1e-4f, 1e-5f, 0.03f};  // the last one diverges in every implementation
    c.device = Device::CPU;
    const MlpResult ref = run_mlp(c);
    c.device = Device::CUDA;
    for (const std::string impl : {"kernels", "graph", "fused"}) {
      if (impl == "graph" && !cuda_available()) continue;  // CUDA graphs: a GPU's (not the SIMT emulator's)
      c.impl = impl;
      const MlpResult got = run_mlp(c);
      ASSERT_EQ(got.impl, impl);
      for (size_t m = 0; m < 3; ++m) {
        EXPECT_EQ(got.models[m].diverged_at, ref.models[m].diverged_at) << impl << " lr " << c.lrs[m];
        if (ref.models[m].diverged_at >= 0) continue;
        EXPECT_LT(rel_err(got.models[m].losses, ref.models[m].losses), 1e-3) << impl << " " << iters << " iterations";
        EXPECT_LT(rel_err(got.models[m].params, ref.models[m].params), 1e-3) << impl << " " << iters << " iterations";
      }
    }
  }
}
#endif
