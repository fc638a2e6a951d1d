#include <cstring>

#include "kernels/nn/linear_row.h"

namespace handgrad::cpu {

void linear_row_forward(float* y, RowSource x, const float* W, const LinearRowShape& s) {
  for (int64_t m = 0; m < s.models; ++m) {
    const float* xm = x.row(m);
    const float* Wm = W + m * s.w_stride;
    float* ym = y + m * s.N;
    std::memset(ym, 0, sizeof(float) * s.N);
    for (int64_t k = 0; k < s.K; ++k) {  // y += x[k] * W[k, :]: contiguous rows of W
      const float xk = xm[k];
      const float* wk = Wm + k * s.N;
#pragma omp simd
      for (int64_t n = 0; n < s.N; ++n) ym[n] += xk * wk[n];
    }
  }
}

void linear_row_backward_weight(float* dW, RowSource x, const float* dy, const LinearRowShape& s) {
  for (int64_t m = 0; m < s.models; ++m) {
    const float* xm = x.row(m);
    const float* dym = dy + m * s.N;
    float* dWm = dW + m * s.w_stride;
    for (int64_t k = 0; k < s.K; ++k) {
#pragma omp simd
      for (int64_t n = 0; n < s.N; ++n) dWm[k * s.N + n] = xm[k] * dym[n];
    }
  }
}

void linear_row_backward_input(float* dx, const float* dy, const float* W, const LinearRowShape& s) {
  for (int64_t m = 0; m < s.models; ++m) {
    const float* dym = dy + m * s.N;
    const float* Wm = W + m * s.w_stride;
    for (int64_t k = 0; k < s.K; ++k) {
      float acc = 0.f;
      for (int64_t n = 0; n < s.N; ++n) acc += dym[n] * Wm[k * s.N + n];
      dx[m * s.K + k] = acc;
    }
  }
}

}  // namespace handgrad::cpu
