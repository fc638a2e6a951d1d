#include "kernels/nn/rows.h"

namespace handgrad::cpu {

void add_row_bias(float* y, const float* b, int64_t N, int64_t K) {
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < K; ++k) y[n * K + k] += b[k];
}

void gather_pixels(float* dst, const uint8_t* src, const int64_t* idx, int64_t rows, int64_t len, PixelScale s) {
#pragma omp parallel for schedule(static) if (rows * len > (1 << 16))
  for (int64_t i = 0; i < rows; ++i) {
    const uint8_t* row = src + (idx ? idx[i] : i) * len;
    for (int64_t j = 0; j < len; ++j) dst[i * len + j] = pixel_value(row[j], s);
  }
}

void gather_i32(int32_t* dst, const int32_t* src, const int64_t* idx, int64_t rows) {
  for (int64_t i = 0; i < rows; ++i) dst[i] = src[idx[i]];
}

}  // namespace handgrad::cpu
