#include <algorithm>
#include <cstring>
#include <limits>

#include "kernels/nn/pooling.h"

namespace handgrad::cpu {

// ---- channels-last -------------------------------------------------------------------------

void maxpool2d_forward_nhwc(float* y, int32_t* argmax, const float* x, const Pool2dShape& s) {
  const int64_t OH = s.OH(), OW = s.OW(), C = s.C;
  constexpr int64_t kChunk = 64;  // channels whose running maxima stay in registers / L1
#pragma omp parallel for collapse(2) schedule(static)
  for (int64_t n = 0; n < s.N; ++n)
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox)
        for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
          const int64_t w = std::min(kChunk, C - c0);
          float best[kChunk];
          int32_t at[kChunk];
          bool first = true;  // the window's first element in scan order starts the maxima
          const Pool2dShape::Span rows = s.window_rows(oy), cols = s.window_cols(ox);
          for (int64_t iy = rows.begin; iy < rows.end; ++iy) {
            for (int64_t ix = cols.begin; ix < cols.end; ++ix) {
              const float* in = x + ((n * s.H + iy) * s.W + ix) * C + c0;
              const int32_t where = static_cast<int32_t>(iy * s.W + ix);
              if (first) {
                std::copy(in, in + w, best);
                std::fill(at, at + w, where);
                first = false;
                continue;
              }
              // Selects, not branches: the winner of a window is anyone's guess.
              for (int64_t j = 0; j < w; ++j) {
                const float v = in[j], b = best[j];
                const bool take = (v > b) | ((v != v) & (b == b));  // first max wins; the first NaN sticks
                best[j] = take ? v : b;
                at[j] = take ? where : at[j];
              }
            }
          }
          const int64_t o = ((n * OH + oy) * OW + ox) * C + c0;
          std::copy(best, best + w, y + o);
          std::copy(at, at + w, argmax + o);
        }
}

void maxpool2d_backward_nhwc(float* dx, const float* dy, const int32_t* argmax, const Pool2dShape& s) {
  const int64_t OHW = s.OH() * s.OW(), C = s.C;
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < s.N; ++n) {
    float* out = dx + n * s.H * s.W * C;
    std::memset(out, 0, sizeof(float) * s.H * s.W * C);
    for (int64_t i = 0; i < OHW; ++i) {
      const int64_t o = (n * OHW + i) * C;
      for (int64_t c = 0; c < C; ++c) out[argmax[o + c] * C + c] += dy[o + c];
    }
  }
}

void global_avgpool_forward_nhwc(float* y, const float* x, int64_t N, int64_t HW, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    float* out = y + n * C;
    std::fill(out, out + C, 0.f);
    for (int64_t k = 0; k < HW; ++k)  // each channel summed in the NCHW twin's order
      for (int64_t c = 0; c < C; ++c) out[c] += x[(n * HW + k) * C + c];
    for (int64_t c = 0; c < C; ++c) out[c] /= HW;
  }
}

void global_avgpool_backward_nhwc(float* dx, const float* dy, int64_t N, int64_t HW, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n)
    for (int64_t k = 0; k < HW; ++k)
      for (int64_t c = 0; c < C; ++c) dx[(n * HW + k) * C + c] = dy[n * C + c] / HW;
}

}  // namespace handgrad::cpu
