#include "kernels/einsum/strided_copy.h"

namespace handgrad::cpu {

void strided_copy(float* out, const float* in, const StridedView<1>& v) {
  if (v.ndim == 0) {
    out[0] = in[0];
    return;
  }
  const int last = v.ndim - 1;
  const int64_t inner = v.shape[last];
  if (inner == 0) return;
  const int64_t s = v.stride[0][last];
  const int64_t rows = v.numel() / inner;
  StridedView<1> outer_view = v;
  outer_view.ndim = last;
#pragma omp parallel for schedule(static) if (v.numel() > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off[1];
    outer_view.offsets<int64_t>(r, off);
    const float* src = in + off[0];
    float* dst = out + r * inner;
    if (s == 1) {
      for (int64_t i = 0; i < inner; ++i) dst[i] = src[i];
    } else {
      for (int64_t i = 0; i < inner; ++i) dst[i] = src[i * s];
    }
  }
}

}  // namespace handgrad::cpu
