// ReLU, elementwise over n floats.
//   relu_forward:  y = max(x, 0)
//   relu_backward: dx = dy * [x >= 0]      (the course defines relu'(0) = 1; PyTorch uses 0)
#pragma once
#include <cstdint>

namespace handgrad {

namespace cpu {
void relu_forward(float* y, const float* x, int64_t n);
void relu_backward(float* dx, const float* dy, const float* x, int64_t n);
// The ResNet's residual join backward, in one pass: dx += dy * [y > 0], or dx += dy when y is
// null (the downsample path's gradient joining the main path's).
void add_relu_backward(float* dx, const float* dy, const float* y, int64_t n);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void relu_forward(float* y, const float* x, int64_t n);
void relu_backward(float* dx, const float* dy, const float* x, int64_t n);
void add_relu_backward(float* dx, const float* dy, const float* y, int64_t n);
}  // namespace cuda
#endif

}  // namespace handgrad
