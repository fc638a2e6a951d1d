// Row operations around the fully connected layer and the data pipeline.
//   add_row_bias: y[n, k] += b[k]                  (y is [N, K])
//   gather_pixels: dst[i, :] = pixel_value(src[idx[i], :])   (the dataset stays uint8; each batch
//                  becomes float as it is gathered; idx null: rows 0..rows-1 in order)
//   gather_i32:    dst[i] = src[idx[i]]             (the batch's labels)
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace handgrad {

// A pixel byte as the network sees it: p / 255, then (v - mean) / std when normalising. One
// expression for both devices (IEEE division on each), so both give the same bits.
struct PixelScale {
  bool normalize = false;
  float mean = 0.f, std = 1.f;
};
HG_HD float pixel_value(uint8_t p, PixelScale s) {
  const float v = static_cast<float>(p) / 255.f;
  return s.normalize ? (v - s.mean) / s.std : v;
}

namespace cpu {
void add_row_bias(float* y, const float* b, int64_t N, int64_t K);
void gather_i32(int32_t* dst, const int32_t* src, const int64_t* idx, int64_t rows);
void gather_pixels(float* dst, const uint8_t* src, const int64_t* idx, int64_t rows, int64_t len, PixelScale s);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void add_row_bias(float* y, const float* b, int64_t N, int64_t K);
void gather_i32(int32_t* dst, const int32_t* src, const int64_t* idx, int64_t rows);
void gather_pixels(float* dst, const uint8_t* src, const int64_t* idx, int64_t rows, int64_t len, PixelScale s);
}  // namespace cuda
#endif

}  // namespace handgrad
