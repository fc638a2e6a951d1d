#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu_parallel.h"
#include "kernels/mlp/mlp_train.h"

namespace handgrad::cpu {

namespace {

// One model, all iterations, in one pass over W1 per iteration: the update of step t, row by row,
// also accumulates step t+1's forward (a = x_{t+1} W1) from each freshly updated row, so W1 is
// read and written once, not read twice and written once. The same operations in the same order
// as the two-pass loop (train_one_two_pass, kept as the reference): the same bits.
// Weights stay hot in L1 (64 x 64 floats = 16 KB at the defaults).
HG_VECTOR_CLONES_AVX512 int64_t train_one(float* __restrict W1, float* __restrict losses, const MlpRun& r,
                                          float lr, float* __restrict a, float* __restrict da) {
  const int64_t D = r.d, H = r.h;
  float* __restrict W2 = W1 + D * H;
  if (r.iters <= 0) return -1;
  {  // The first forward: a = x_0 W1 as a sum of W1's rows (contiguous).
    const float* __restrict x = r.X + r.indices[0] * D;
    for (int64_t j = 0; j < H; ++j) a[j] = 0.f;
    for (int64_t k = 0; k < D; ++k) {
      const float xk = x[k];
      const float* __restrict w = W1 + k * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) a[j] += xk * w[j];
    }
  }
  for (int64_t t = 0; t < r.iters; ++t) {
    const int64_t i = r.indices[t];
    const float* __restrict x = r.X + i * D;
    float yhat = 0.f;
    for (int64_t j = 0; j < H; ++j) yhat += (a[j] > 0.f ? a[j] : 0.f) * W2[j];
    const float diff = yhat - r.Y[i];
    const float loss = diff * diff;
    losses[t] = loss;
    if (!(loss <= kDivergedLoss)) {  // also catches NaN
      for (int64_t u = t + 1; u < r.iters; ++u) losses[u] = std::numeric_limits<float>::quiet_NaN();
      return t;
    }
    // Backward and update. da uses W2 before its update; relu'(a) = 1 for a >= 0 (the course's).
    const float g = 2.f * diff;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      da[j] = a[j] >= 0.f ? g * W2[j] : 0.f;
      W2[j] -= lr * (g * (a[j] > 0.f ? a[j] : 0.f));
    }
    if (t + 1 < r.iters) {  // W1 -= lr x^T da, and a = x_{t+1} W1 from the updated rows
      const float* __restrict xn = r.X + r.indices[t + 1] * D;
      for (int64_t j = 0; j < H; ++j) a[j] = 0.f;
      for (int64_t k = 0; k < D; ++k) {
        const float step = lr * x[k], xk = xn[k];
        float* __restrict w = W1 + k * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) {
          const float updated = w[j] - step * da[j];
          w[j] = updated;
          a[j] += xk * updated;
        }
      }
    } else {
      for (int64_t k = 0; k < D; ++k) {
        const float step = lr * x[k];
        float* __restrict w = W1 + k * H;
#pragma omp simd
        for (int64_t j = 0; j < H; ++j) w[j] -= step * da[j];
      }
    }
  }
  return -1;
}

// The two-pass loop the fused one replaced (forward over W1, then the update over W1): the
// reference it must equal bit for bit.
HG_VECTOR_CLONES_AVX512 int64_t train_one_two_pass(float* __restrict W1, float* __restrict losses, const MlpRun& r,
                                                   float lr, float* __restrict a, float* __restrict da) {
  const int64_t D = r.d, H = r.h;
  float* __restrict W2 = W1 + D * H;
  for (int64_t t = 0; t < r.iters; ++t) {
    const int64_t i = r.indices[t];
    const float* __restrict x = r.X + i * D;
    for (int64_t j = 0; j < H; ++j) a[j] = 0.f;
    for (int64_t k = 0; k < D; ++k) {
      const float xk = x[k];
      const float* __restrict w = W1 + k * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) a[j] += xk * w[j];
    }
    float yhat = 0.f;
    for (int64_t j = 0; j < H; ++j) yhat += (a[j] > 0.f ? a[j] : 0.f) * W2[j];
    const float diff = yhat - r.Y[i];
    const float loss = diff * diff;
    losses[t] = loss;
    if (!(loss <= kDivergedLoss)) {
      for (int64_t u = t + 1; u < r.iters; ++u) losses[u] = std::numeric_limits<float>::quiet_NaN();
      return t;
    }
    const float g = 2.f * diff;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) {
      da[j] = a[j] >= 0.f ? g * W2[j] : 0.f;
      W2[j] -= lr * (g * (a[j] > 0.f ? a[j] : 0.f));
    }
    for (int64_t k = 0; k < D; ++k) {
      const float step = lr * x[k];
      float* __restrict w = W1 + k * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) w[j] -= step * da[j];
    }
  }
  return -1;
}

template <typename Trainer>
void train_models(Trainer&& trainer, float* params, float* losses, int64_t* diverged_at, const MlpRun& r) {
  const int64_t P = mlp_param_count(r.d, r.h);
#pragma omp parallel for schedule(dynamic, 1) if (r.models > 1)
  for (int64_t m = 0; m < r.models; ++m) {
    std::vector<float> a(r.h), da(r.h);  // once per model, not per step
    diverged_at[m] = trainer(params + m * P, losses + m * r.iters, r, r.lr[m], a.data(), da.data());
  }
}

}  // namespace

void mlp_train(float* params, float* losses, int64_t* diverged_at, const MlpRun& r) {
  train_models(train_one, params, losses, diverged_at, r);
}

void mlp_train_two_pass(float* params, float* losses, int64_t* diverged_at, const MlpRun& r) {
  train_models(train_one_two_pass, params, losses, diverged_at, r);
}

}  // namespace handgrad::cpu
