#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu_parallel.h"
#include "kernels/mlp/mlp_train.h"

namespace handgrad::cpu {

namespace {

// One model, all iterations. Weights stay hot in L1 (64 x 64 floats = 16 KB at the defaults).
HG_VECTOR_CLONES int64_t train_one(float* __restrict W1, float* __restrict losses, const MlpRun& r,
                                   float lr, float* __restrict a, float* __restrict da) {
  const int64_t D = r.d, H = r.h;
  float* __restrict W2 = W1 + D * H;
  for (int64_t t = 0; t < r.iters; ++t) {
    const int64_t i = r.indices[t];
    const float* __restrict x = r.X + i * D;
    // Forward: a = x W1 as a sum of W1's rows (contiguous), then y' = relu(a) . W2.
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
    for (int64_t k = 0; k < D; ++k) {
      const float step = lr * x[k];
      float* __restrict w = W1 + k * H;
#pragma omp simd
      for (int64_t j = 0; j < H; ++j) w[j] -= step * da[j];
    }
  }
  return -1;
}

}  // namespace

void mlp_train(float* params, float* losses, int64_t* diverged_at, const MlpRun& r) {
  const int64_t P = mlp_param_count(r.d, r.h);
#pragma omp parallel for schedule(dynamic, 1) if (r.models > 1)
  for (int64_t m = 0; m < r.models; ++m) {
    std::vector<float> a(r.h), da(r.h);  // once per model, not per step
    diverged_at[m] = train_one(params + m * P, losses + m * r.iters, r, r.lr[m], a.data(), da.data());
  }
}

}  // namespace handgrad::cpu
