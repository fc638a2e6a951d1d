#include "kernels/optim/sgd.h"

namespace handgrad::cpu {

void sgd_step(float* params, const float* grads, const float* lr, int64_t groups, int64_t n) {
  for (int64_t g = 0; g < groups; ++g) {
    float* p = params + g * n;
    const float* d = grads + g * n;
    const float step = lr[g];
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) p[i] -= step * d[i];
  }
}

}  // namespace handgrad::cpu
