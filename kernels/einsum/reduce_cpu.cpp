#include <algorithm>
#include <cstring>

#include "kernels/einsum/reduce.h"

namespace handgrad::cpu {

void sum_middle(float* out, const float* in, int64_t outer, int64_t R, int64_t inner) {
  if (inner == 1) {
    // Row sums: each output is a dot product with ones; four accumulators keep the adds
    // independent so the loop vectorises without -ffast-math reassociation.
#pragma omp parallel for schedule(static) if (outer * R > (1 << 16))
    for (int64_t o = 0; o < outer; ++o) {
      const float* row = in + o * R;
      float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t r = 0;
      for (; r + 8 <= R; r += 8)
        for (int j = 0; j < 8; ++j) acc[j] += row[r + j];
      float s = ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
      for (; r < R; ++r) s += row[r];
      out[o] = s;
    }
    return;
  }
  // Column sums: each task owns a chunk of one output row and streams the R input rows
  // through it (the chunk stays in L1). Tasks span outer x chunks, so a short `outer` still
  // keeps every thread busy.
  constexpr int64_t kChunk = 1024;
  const int64_t chunks = (inner + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (outer * R * inner > (1 << 16))
  for (int64_t task = 0; task < outer * chunks; ++task) {
    const int64_t o = task / chunks;
    const int64_t i0 = (task % chunks) * kChunk;
    const int64_t len = std::min(kChunk, inner - i0);
    float* dst = out + o * inner + i0;
    std::memset(dst, 0, sizeof(float) * len);
    const float* src = in + o * R * inner + i0;
    for (int64_t r = 0; r < R; ++r) {
      const float* row = src + r * inner;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) dst[i] += row[i];
    }
  }
}

}  // namespace handgrad::cpu
