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

void sgd_momentum_step(float* params, const float* grads, float* velocity, int64_t n, float lr, float mu) {
#pragma omp parallel for simd schedule(static) if (n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    velocity[i] = mu * velocity[i] + grads[i];
    params[i] -= lr * velocity[i];
  }
}

void sgd_momentum_step(float* params, const float* grads, float* velocity, const ParamRanges& ranges, float lr,
                       float mu) {
  for (int r = 0; r < ranges.count; ++r) {
    const int64_t b = ranges.begin[r];
    sgd_momentum_step(params + b, grads + b, velocity + b, ranges.end[r] - b, lr, mu);
  }
}

}  // namespace handgrad::cpu
