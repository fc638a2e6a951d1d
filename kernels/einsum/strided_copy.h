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

// The CUDA kernel strided_copy launches for a view: the tiled transpose when output axis p, the
// input's contiguous one, is not the output's last axis and both are at least 8 long (shorter,
// a tile would be mostly idle); otherwise the gather, with 32-bit index math when the element
// count fits. Host code, so a test pins the path a shape takes on any machine.
enum class StridedCopyKernel { TiledTranspose, Gather32, Gather64 };
struct StridedCopyPath {
  StridedCopyKernel kernel;
  int p;  // with TiledTranspose: the output axis that is contiguous in the input
};
inline StridedCopyPath strided_copy_path(const StridedView<1>& view) {
  const int last = view.ndim - 1;
  int p = -1;
  for (int d = 0; d < view.ndim; ++d)
    if (view.stride[0][d] == 1) p = d;
  if (last >= 1 && p >= 0 && p != last && view.shape[last] >= 8 && view.shape[p] >= 8)
    return {StridedCopyKernel::TiledTranspose, p};
  return {view.numel() <= INT32_MAX ? StridedCopyKernel::Gather32 : StridedCopyKernel::Gather64, -1};
}

namespace cpu {
void strided_copy(float* out, const float* in, const StridedView<1>& view);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void strided_copy(float* out, const float* in, const StridedView<1>& view);
}  // namespace cuda
#endif

}  // namespace handgrad
