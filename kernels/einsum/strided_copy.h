// Strided gather into a contiguous output: out[i] = in[off(i)] over view.shape (strided.h,
// operand 0 = the input). One kernel serves every data movement the einsum planner needs:
//   permute      (the input's strides, reordered),
//   diagonal     ('ii->i': the stride of a repeated index is the sum of its strides),
//   broadcast    (stride 0: a size-1 index expanded to the size another operand has).
// The CUDA version tiles through shared memory when the input's contiguous axis is not the
// output's, so both the reads and the writes stay coalesced.
#pragma once
#include <cstdint>

#include "kernels/einsum/strided.h"

namespace handgrad {

namespace cpu {
void strided_copy(float* out, const float* in, const StridedView<1>& view);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void strided_copy(float* out, const float* in, const StridedView<1>& view);
}  // namespace cuda
#endif

}  // namespace handgrad
