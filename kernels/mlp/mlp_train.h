// Q2's whole training run in one call: a two-layer ReLU regression net trained by batch-1 SGD,
// every derivative by hand, for several independent models at once (a learning-rate sweep).
//
// Model m's parameters are params + m * P, P = mlp_param_count(d, h): W1 (d x h, row-major)
// then W2 (h x 1). Step t uses data point i = indices[t]:
//   a = x_i W1,  a' = relu(a),  y' = a' W2,  l_t = (y' - y_i)^2
//   dy' = 2 (y' - y_i),  dW2 = a'^T dy',  da = (dy' W2^T) * [a >= 0],  dW1 = x_i^T da
//   W1 -= lr_m dW1,  W2 -= lr_m dW2            (gradients from the weights before the step)
// losses[m * iters + t] = l_t. A model whose loss is not finite or exceeds kDivergedLoss
// diverges: diverged_at[m] = t, it stops training, and its later losses are NaN
// (diverged_at[m] = -1 for a model that finished).
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace handgrad {

constexpr float kDivergedLoss = 1e20f;

HG_HD int64_t mlp_param_count(int64_t d, int64_t h) { return d * h + h; }

struct MlpRun {
  int64_t models = 1, n = 0, d = 0, h = 0, iters = 0;
  const float* X = nullptr;          // [n][d]
  const float* Y = nullptr;          // [n]
  const int64_t* indices = nullptr;  // [iters], each in [0, n)
  const float* lr = nullptr;         // [models]
};

namespace cpu {
// The reference: one tight loop per model, no allocation per step; models run in parallel. Each
// iteration makes one pass over W1 (step t's update fused with step t+1's forward).
void mlp_train(float* params, float* losses, int64_t* diverged_at, const MlpRun& r);
// The same steps as two passes over W1 per iteration (forward, then update): mlp_train must
// give the same bits (tests).
void mlp_train_two_pass(float* params, float* losses, int64_t* diverged_at, const MlpRun& r);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// True when one model's weights fit in one block's shared memory on this GPU.
bool mlp_fused_fits(int64_t d, int64_t h);
// One persistent kernel for the whole run: one block per model, weights resident in shared
// memory for all iterations (all pointers are device pointers).
void mlp_train_fused(float* params, float* losses, int64_t* diverged_at, const MlpRun& r);
}  // namespace cuda
#endif

}  // namespace handgrad
