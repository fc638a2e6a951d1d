// Squared error of one scalar prediction per model, and its gradient:
//   loss[m] = (yhat[m] - y_m)^2,   dyhat[m] = 2 (yhat[m] - y_m),   y_m = target.row(m)[0]
// The loss is written to loss_log[m * log_stride + *step] (a per-model log of every step).
#pragma once
#include <cstdint>

#include "kernels/nn/linear_row.h"  // RowSource

namespace handgrad {

namespace cpu {
void mse_loss_grad(float* loss_log, int64_t log_stride, const int64_t* step, float* dyhat,
                   const float* yhat, RowSource target, int64_t models);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void mse_loss_grad(float* loss_log, int64_t log_stride, const int64_t* step, float* dyhat,
                   const float* yhat, RowSource target, int64_t models);
}  // namespace cuda
#endif

}  // namespace handgrad
