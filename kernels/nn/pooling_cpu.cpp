#include <cstring>
#include <limits>

#include "kernels/nn/pooling.h"

namespace handgrad::cpu {

void maxpool2d_forward(float* y, int32_t* argmax, const float* x, const Pool2dShape& s) {
  const int64_t OH = s.OH(), OW = s.OW();
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < s.N * s.C; ++nc) {
    const float* in = x + nc * s.H * s.W;
    for (int64_t oy = 0; oy < OH; ++oy)
      for (int64_t ox = 0; ox < OW; ++ox) {
        float best = -std::numeric_limits<float>::infinity();
        int32_t at = -1;
        for (int64_t r = 0; r < s.R; ++r) {
          const int64_t iy = oy * s.stride - s.pad + r;
          if (iy < 0 || iy >= s.H) continue;
          for (int64_t c = 0; c < s.R; ++c) {
            const int64_t ix = ox * s.stride - s.pad + c;
            if (ix < 0 || ix >= s.W) continue;
            const float v = in[iy * s.W + ix];
            if (v > best || at < 0 || v != v) {  // first max wins; NaN propagates (as PyTorch)
              best = v;
              at = static_cast<int32_t>(iy * s.W + ix);
              if (v != v) break;
            }
          }
        }
        y[(nc * OH + oy) * OW + ox] = best;
        argmax[(nc * OH + oy) * OW + ox] = at;
      }
  }
}

void maxpool2d_backward(float* dx, const float* dy, const int32_t* argmax, const Pool2dShape& s) {
  const int64_t OHW = s.OH() * s.OW();
#pragma omp parallel for schedule(static)
  for (int64_t nc = 0; nc < s.N * s.C; ++nc) {
    float* out = dx + nc * s.H * s.W;
    std::memset(out, 0, sizeof(float) * s.H * s.W);
    for (int64_t i = 0; i < OHW; ++i) out[argmax[nc * OHW + i]] += dy[nc * OHW + i];
  }
}

void global_avgpool_forward(float* y, const float* x, int64_t NC, int64_t HW) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < NC; ++i) {
    float sum = 0.f;
    for (int64_t k = 0; k < HW; ++k) sum += x[i * HW + k];
    y[i] = sum / HW;
  }
}

void global_avgpool_backward(float* dx, const float* dy, int64_t NC, int64_t HW) {
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < NC; ++i)
    for (int64_t k = 0; k < HW; ++k) dx[i * HW + k] = dy[i] / HW;
}

}  // namespace handgrad::cpu
