#include "kernels/einsum/elementwise.h"

namespace handgrad::cpu {

void mul(float* out, const float* a, const float* b, int64_t n) {
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] * b[i];
}

void mul_broadcast(float* out, const float* a, const float* b, const StridedView<2>& v) {
  if (v.ndim == 0) {  // every dim is 1
    out[0] = a[0] * b[0];
    return;
  }
  // Walk all but the innermost dim by index; the innermost one is a tight strided loop.
  const int last = v.ndim - 1;
  const int64_t inner = v.shape[last];
  const int64_t sa = v.stride[0][last], sb = v.stride[1][last];
  const int64_t rows = v.numel() / (inner ? inner : 1);
  if (inner == 0) return;
  StridedView<2> outer_view = v;
  outer_view.ndim = last;
#pragma omp parallel for schedule(static) if (v.numel() > (1 << 16))
  for (int64_t r = 0; r < rows; ++r) {
    int64_t off[2];
    outer_view.offsets<int64_t>(r, off);
    const float* pa = a + off[0];
    const float* pb = b + off[1];
    float* po = out + r * inner;
    for (int64_t i = 0; i < inner; ++i) po[i] = pa[i * sa] * pb[i * sb];
  }
}

}  // namespace handgrad::cpu
