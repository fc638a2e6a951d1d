#include <algorithm>

#include "kernels/cpu_parallel.h"
#include "kernels/nn/relu.h"

namespace handgrad::cpu {

void relu_forward(float* y, const float* x, int64_t n) {
  parallel_ranges(n, 1 << 15, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) y[i] = x[i] > 0.f ? x[i] : 0.f;
  });
}

void relu_backward(float* dx, const float* dy, const float* x, int64_t n) {
  parallel_ranges(n, 1 << 15, [&](int64_t b, int64_t e) {
#pragma omp simd
    for (int64_t i = b; i < e; ++i) dx[i] = keep_if(x[i] >= 0.f, dy[i]);
  });
}

void add_relu_backward(float* dx, const float* dy, const float* y, int64_t n) {
  parallel_ranges(n, 1 << 15, [&](int64_t lo, int64_t hi) {
    if (!y) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) dx[i] += dy[i];
      return;
    }
#pragma omp simd
    for (int64_t i = lo; i < hi; ++i) dx[i] += keep_if(y[i] > 0.f, dy[i]);
  });
}

}  // namespace handgrad::cpu
