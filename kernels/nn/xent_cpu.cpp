#include <cmath>

#include "kernels/nn/xent.h"

namespace handgrad::cpu {

double softmax_xent(float* dz, const float* z, const int32_t* labels, int64_t N, int64_t K, int64_t* correct) {
  double total = 0;
  int64_t right = 0;
  for (int64_t n = 0; n < N; ++n) {
    const float* row = z + n * K;
    int64_t arg = 0;
    for (int64_t k = 1; k < K; ++k)
      if (row[k] > row[arg]) arg = k;
    const double mx = row[arg];
    double sum = 0;
    for (int64_t k = 0; k < K; ++k) sum += std::exp(row[k] - mx);
    const double lse = mx + std::log(sum);
    total += lse - row[labels[n]];
    right += arg == labels[n];
    if (dz)
      for (int64_t k = 0; k < K; ++k)
        dz[n * K + k] = static_cast<float>((std::exp(row[k] - lse) - (k == labels[n] ? 1.0 : 0.0)) / N);
  }
  if (correct) *correct = right;
  return N ? total / N : 0.0;
}

void add_row_sums(double* sums, const float* row_loss, const int32_t* row_correct, int64_t N) {
  double loss = 0, right = 0;
  for (int64_t n = 0; n < N; ++n) loss += row_loss[n], right += row_correct[n];
  sums[0] += loss;
  sums[1] += right;
}

}  // namespace handgrad::cpu
