// Row operations around the fully connected layer and the data pipeline.
//   add_row_bias: y[n, k] += b[k]                  (y is [N, K])
//   gather_rows:  dst[i, :] = src[idx[i], :]       (float rows of `len`; int32 scalars below)
#pragma once
#include <cstdint>

namespace handgrad {

namespace cpu {
void add_row_bias(float* y, const float* b, int64_t N, int64_t K);
void gather_rows(float* dst, const float* src, const int64_t* idx, int64_t rows, int64_t len);
void gather_i32(int32_t* dst, const int32_t* src, const int64_t* idx, int64_t rows);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void add_row_bias(float* y, const float* b, int64_t N, int64_t K);
void gather_rows(float* dst, const float* src, const int64_t* idx, int64_t rows, int64_t len);
void gather_i32(int32_t* dst, const int32_t* src, const int64_t* idx, int64_t rows);
}  // namespace cuda
#endif

}  // namespace handgrad
