#include <cmath>

#include "kernels/nn/batchnorm.h"

namespace handgrad::cpu {

void batchnorm_forward_train(float* y, const float* x, const float* gamma, const float* beta,
                             float* running_mean, float* running_var, float* save_mean,
                             float* save_invstd, const BatchNormShape& s) {
  const int64_t n = s.N * s.HW;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < s.C; ++c) {
    // Two passes in double: the mean, then the squared deviations (no cancellation).
    double sum = 0;
    for (int64_t b = 0; b < s.N; ++b) {
      const float* p = x + (b * s.C + c) * s.HW;
      for (int64_t i = 0; i < s.HW; ++i) sum += p[i];
    }
    const double mean = sum / n;
    double sq = 0;
    for (int64_t b = 0; b < s.N; ++b) {
      const float* p = x + (b * s.C + c) * s.HW;
      for (int64_t i = 0; i < s.HW; ++i) sq += (p[i] - mean) * (p[i] - mean);
    }
    const double var = sq / n;
    const float invstd = static_cast<float>(1.0 / std::sqrt(var + s.eps));
    const float g = gamma[c] * invstd, m = static_cast<float>(mean);
    for (int64_t b = 0; b < s.N; ++b) {
      const float* p = x + (b * s.C + c) * s.HW;
      float* q = y + (b * s.C + c) * s.HW;
      for (int64_t i = 0; i < s.HW; ++i) q[i] = (p[i] - m) * g + beta[c];
    }
    save_mean[c] = m;
    save_invstd[c] = invstd;
    running_mean[c] = (1 - s.momentum) * running_mean[c] + s.momentum * m;
    const double unbiased = n > 1 ? var * n / (n - 1) : var;
    running_var[c] = (1 - s.momentum) * running_var[c] + s.momentum * static_cast<float>(unbiased);
  }
}

void batchnorm_forward_eval(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, const BatchNormShape& s) {
#pragma omp parallel for schedule(static) collapse(2)
  for (int64_t b = 0; b < s.N; ++b)
    for (int64_t c = 0; c < s.C; ++c) {
      const float invstd = 1.f / std::sqrt(running_var[c] + s.eps);
      const float g = gamma[c] * invstd, m = running_mean[c];
      const float* p = x + (b * s.C + c) * s.HW;
      float* q = y + (b * s.C + c) * s.HW;
      for (int64_t i = 0; i < s.HW; ++i) q[i] = (p[i] - m) * g + beta[c];
    }
}

void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        const BatchNormShape& s) {
  const int64_t n = s.N * s.HW;
#pragma omp parallel for schedule(static)
  for (int64_t c = 0; c < s.C; ++c) {
    const float m = save_mean[c], invstd = save_invstd[c];
    double sdy = 0, sdyx = 0;
    for (int64_t b = 0; b < s.N; ++b) {
      const float* p = x + (b * s.C + c) * s.HW;
      const float* d = dy + (b * s.C + c) * s.HW;
      for (int64_t i = 0; i < s.HW; ++i) {
        sdy += d[i];
        sdyx += d[i] * ((p[i] - m) * invstd);
      }
    }
    if (dgamma) dgamma[c] = static_cast<float>(sdyx);
    if (dbeta) dbeta[c] = static_cast<float>(sdy);
    const float k = gamma[c] * invstd / n;
    const float a = static_cast<float>(sdy), bq = static_cast<float>(sdyx);
    for (int64_t b = 0; b < s.N; ++b) {
      const float* p = x + (b * s.C + c) * s.HW;
      const float* d = dy + (b * s.C + c) * s.HW;
      float* q = dx + (b * s.C + c) * s.HW;
      for (int64_t i = 0; i < s.HW; ++i) q[i] = k * (n * d[i] - a - (p[i] - m) * invstd * bq);
    }
  }
}

}  // namespace handgrad::cpu
