#include <cmath>
#include <limits>
#include <vector>

#include "kernels/cpu_parallel.h"
#include "kernels/mlp/mlp_train.h"

namespace handgrad::cpu {

namespace {

// The pieces of one SGD step, shared by both loops below (inlined into each clone, so each keeps
// its vector code and both compute the same bits).

// a = x W1 as a sum of W1's rows (contiguous), in the order k = 0..D-1.
[[gnu::always_inline]] inline void forward_rows(float* __restrict a, const float* __restrict W1,
                                                const float* __restrict x, int64_t D, int64_t H) {
  for (int64_t j = 0; j < H; ++j) a[j] = 0.f;
  for (int64_t k = 0; k < D; ++k) {
    const float xk = x[k];
    const float* __restrict w = W1 + k * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) a[j] += xk * w[j];
  }
}

// y' = relu(a) . W2 and the step's loss (y' - y)^2 into losses[t]. A loss that is not finite or
// exceeds kDivergedLoss ends the model: its later losses are NaN, and false is returned.
[[gnu::always_inline]] inline bool output_and_loss(float* __restrict losses, int64_t t, int64_t iters,
                                                   const float* __restrict a, const float* __restrict W2, float y,
                                                   int64_t H, float* diff) {
  float yhat = 0.f;
  for (int64_t j = 0; j < H; ++j) yhat += (a[j] > 0.f ? a[j] : 0.f) * W2[j];
  *diff = yhat - y;
  const float loss = *diff * *diff;
  losses[t] = loss;
  if (loss <= kDivergedLoss) return true;  // false for NaN too
  for (int64_t u = t + 1; u < iters; ++u) losses[u] = std::numeric_limits<float>::quiet_NaN();
  return false;
}

// da = (dy' W2^T) * [a >= 0] from W2 before its update (relu'(a) = 1 for a >= 0, the course's),
// then W2 -= lr relu(a) dy', with dy' = g = 2 (y' - y).
[[gnu::always_inline]] inline void backward_output(float* __restrict da, float* __restrict W2,
                                                   const float* __restrict a, float g, float lr, int64_t H) {
#pragma omp simd
  for (int64_t j = 0; j < H; ++j) {
    da[j] = a[j] >= 0.f ? g * W2[j] : 0.f;
    W2[j] -= lr * (g * (a[j] > 0.f ? a[j] : 0.f));
  }
}

// W1 -= lr x^T da, row by row.
[[gnu::always_inline]] inline void update_rows(float* __restrict W1, const float* __restrict x,
                                               const float* __restrict da, float lr, int64_t D, int64_t H) {
  for (int64_t k = 0; k < D; ++k) {
    const float step = lr * x[k];
    float* __restrict w = W1 + k * H;
#pragma omp simd
    for (int64_t j = 0; j < H; ++j) w[j] -= step * da[j];
  }
}

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
  forward_rows(a, W1, r.X + r.indices[0] * D, D, H);  // the first forward; later ones come with the updates
  for (int64_t t = 0; t < r.iters; ++t) {
    const int64_t i = r.indices[t];
    const float* __restrict x = r.X + i * D;
    float diff = 0.f;
    if (!output_and_loss(losses, t, r.iters, a, W2, r.Y[i], H, &diff)) return t;
    backward_output(da, W2, a, 2.f * diff, lr, H);
    if (t + 1 == r.iters) {
      update_rows(W1, x, da, lr, D, H);
      break;
    }
    // W1 -= lr x^T da, and a = x_{t+1} W1 from the updated rows.
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
    forward_rows(a, W1, x, D, H);
    float diff = 0.f;
    if (!output_and_loss(losses, t, r.iters, a, W2, r.Y[i], H, &diff)) return t;
    backward_output(da, W2, a, 2.f * diff, lr, H);
    update_rows(W1, x, da, lr, D, H);
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
