// Batch-1 linear layers (one input row), batched over independent models: the building blocks
// of Q2's per-sample SGD, where every step multiplies one sampled data point by the weights.
//   linear_row_forward:         y[m]  = x_m W_m            (1 x K) (K x N) -> (1 x N)
//   linear_row_backward_weight: dW_m  = x_m^T dy[m]        (K x 1) (1 x N) -> (K x N)
//   linear_row_backward_input:  dx[m] = dy[m] W_m^T        (1 x N) (N x K) -> (1 x K)
// W_m is row-major K x N at W + m * w_stride; y, dy are [models][N]; dx is [models][K].
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace handgrad {

// Where model m's input row comes from: base + m * model_stride, plus, when `indices` is set,
// row indices[*step] of a shared matrix (row_stride floats per row) - the sampled data point.
// `indices` and `step` live where the kernel runs (host memory for the CPU twins).
struct RowSource {
  const float* base = nullptr;
  int64_t model_stride = 0;
  const int64_t* indices = nullptr;
  const int64_t* step = nullptr;
  int64_t row_stride = 0;

  HG_HD const float* row(int64_t m) const {
    return base + m * model_stride + (indices ? indices[*step] * row_stride : 0);
  }
};

struct LinearRowShape {
  int64_t models = 1, K = 0, N = 0;
  int64_t w_stride = 0;  // floats between consecutive models' weights
};

namespace cpu {
void linear_row_forward(float* y, RowSource x, const float* W, const LinearRowShape& s);
void linear_row_backward_weight(float* dW, RowSource x, const float* dy, const LinearRowShape& s);
void linear_row_backward_input(float* dx, const float* dy, const float* W, const LinearRowShape& s);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void linear_row_forward(float* y, RowSource x, const float* W, const LinearRowShape& s);
void linear_row_backward_weight(float* dW, RowSource x, const float* dy, const LinearRowShape& s);
void linear_row_backward_input(float* dx, const float* dy, const float* W, const LinearRowShape& s);
}  // namespace cuda
#endif

}  // namespace handgrad
