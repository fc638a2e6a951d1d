// Elementwise product (einsum with no summed index, e.g. 'abcd,abcd->abcd').
//   mul:           out[i] = a[i] * b[i], i < n, all contiguous.
//   mul_broadcast: out (contiguous in view.shape)[i] = a[off_a(i)] * b[off_b(i)], with the view's
//                  strides (0 = broadcast); see strided.h.
#pragma once
#include <cstdint>

#include "kernels/einsum/strided.h"

namespace handgrad {

namespace cpu {
void mul(float* out, const float* a, const float* b, int64_t n);
void mul_broadcast(float* out, const float* a, const float* b, const StridedView<2>& view);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void mul(float* out, const float* a, const float* b, int64_t n);
void mul_broadcast(float* out, const float* a, const float* b, const StridedView<2>& view);
}  // namespace cuda
#endif

}  // namespace handgrad
