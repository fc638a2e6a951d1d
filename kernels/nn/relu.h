// ReLU, elementwise over n floats.
//   relu_forward:  y = max(x, 0)
//   relu_backward: dx = dy * [x >= 0]      (the course defines relu'(0) = 1; PyTorch uses 0)
#pragma once
#include <cstdint>

namespace handgrad {

namespace cpu {
void relu_forward(float* y, const float* x, int64_t n);
void relu_backward(float* dx, const float* dy, const float* x, int64_t n);
// PyTorch's form, from the output: dx = dy * [y > 0] (relu'(0) = 0), used by the ResNet.
void relu_backward_from_output(float* dx, const float* dy, const float* y, int64_t n);
// The residual join: y = max(a + b, 0).
void add_relu(float* y, const float* a, const float* b, int64_t n);
// y = a + b.
void add(float* y, const float* a, const float* b, int64_t n);
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
