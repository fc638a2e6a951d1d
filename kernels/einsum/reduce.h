// Sum over the middle axis of a contiguous [outer, R, inner] array:
//   out[o, i] = sum_{r < R} in[o, r, i]      (out is [outer, inner]; R = 0 gives zeros)
// Any set of summed axes lowers onto this: 'abcd->abd' is [a*b, c, d], 'abcd->ab' is
// [a*b, c*d, 1], and non-adjacent summed axes are summed one run at a time.
#pragma once
#include <cstddef>
#include <cstdint>

namespace handgrad {

namespace cpu {
void sum_middle(float* out, const float* in, int64_t outer, int64_t R, int64_t inner);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// Floats of scratch space sum_middle needs for this shape (0 when it runs in one pass).
int64_t sum_middle_workspace(int64_t outer, int64_t R, int64_t inner);
// `workspace` holds at least sum_middle_workspace(...) floats. Deterministic: the same inputs
// give the same bits (no atomics; a long R is split into partial sums, then summed in order).
void sum_middle(float* out, const float* in, int64_t outer, int64_t R, int64_t inner,
                float* workspace);
}  // namespace cuda
#endif

}  // namespace handgrad
