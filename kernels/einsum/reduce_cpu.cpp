#include <omp.h>

#include <algorithm>
#include <utility>
#include <cstring>
#include <vector>

#include "kernels/cpu_parallel.h"
#include "kernels/einsum/reduce.h"

namespace handgrad::cpu {

namespace {

// Adds the upper half of `Blocks` blocks of Inner floats onto the lower half while the count is
// even; returns the blocks left. Each level is its own loop of a constant trip count, so the
// tree compiles to straight vector adds on registers: as one runtime `while` loop it went
// through the stack, and [4096, 1024, 1] row sums took 12% longer (5 levels for Inner == 1,
// where a serial fold of 32 dependent adds would cost more than the row itself).
template <int Inner, int Blocks>
[[gnu::always_inline]] inline int fold_halves(float* acc) {
  if constexpr (Blocks > 1 && Blocks % 2 == 0) {
    constexpr int half = Blocks / 2;
#pragma omp simd
    for (int j = 0; j < half * Inner; ++j) acc[j] += acc[j + half * Inner];
    return fold_halves<Inner, half>(acc);
  }
  return Blocks;
}

// out[i] = sum_{r < R} x[r * inner + i], for one `outer` slice (or a chunk of its rows).
// Short rows (inner <= 32): add blocks of rpb = kLanes / Inner consecutive rows into one
// contiguous accumulator of L = rpb * Inner floats, then fold its rows. Inner is a template
// argument so that L is a constant and the accumulator lives in vector registers; it serves
// inner == 1 (row sums) as well as 3 or 31. Inlined into sum_rows, so it is built for AVX2 and
// AVX-512 too.
// kLanes = 64: 8 AVX2 or 4 AVX-512 accumulators, enough independent adds to keep an L3 read
// streaming (32 left [4096, 1024, 1] 12% slower on AVX2). The order of the additions depends on
// kLanes only, not on the vector width: every instruction set gives the same bits.
constexpr int kLanes = 64;
template <int Inner>
[[gnu::always_inline]] inline void sum_short_rows(float* __restrict out, const float* __restrict x, int64_t R) {
  constexpr int rpb = kLanes / Inner, L = rpb * Inner;
  float acc[L] = {};
  int64_t r = 0;
  for (; r + rpb <= R; r += rpb) {
    const float* blk = x + r * Inner;
#pragma omp simd
    for (int j = 0; j < L; ++j) acc[j] += blk[j];
  }
  // Fold the rpb row sums: halve while the count is even (a tree of vector adds), then the
  // rest in order.
  const int blocks = fold_halves<Inner, rpb>(acc);
  for (int i = 0; i < Inner; ++i) {
    float s = 0.f;
    for (int k = 0; k < blocks; ++k) s += acc[k * Inner + i];
    for (int64_t rr = r; rr < R; ++rr) s += x[rr * Inner + i];
    out[i] = s;
  }
}

// Long rows: stream the R rows through an output chunk that stays in L1.
[[gnu::always_inline]] inline void sum_long_rows(float* __restrict out, const float* __restrict x, int64_t R,
                                                 int64_t inner) {
  constexpr int64_t kChunk = 2048;
  for (int64_t i0 = 0; i0 < inner; i0 += kChunk) {
    const int64_t len = std::min(kChunk, inner - i0);
    float* dst = out + i0;
    std::memset(dst, 0, sizeof(float) * len);
    for (int64_t r = 0; r < R; ++r) {
      const float* row = x + r * inner + i0;
#pragma omp simd
      for (int64_t i = 0; i < len; ++i) dst[i] += row[i];
    }
  }
}

// `count` consecutive slices of R short rows each, with one call and one dispatch for all of
// them: per slice, a call and a dispatch cost as much as summing a 4 KB slice ([4096, 1024, 1]
// row sums ran at 84% of a plain streaming sum with a call per slice).
template <int Inner>
[[gnu::always_inline]] inline void sum_short_slices(float* __restrict out, const float* __restrict x, int64_t count,
                                                    int64_t R) {
  for (int64_t o = 0; o < count; ++o) sum_short_rows<Inner>(out + o * Inner, x + o * R * Inner, R);
}

template <int... I>
[[gnu::always_inline]] inline bool dispatch_short_rows(float* out, const float* x, int64_t count, int64_t R,
                                                       int64_t inner, std::integer_sequence<int, I...>) {
  // Expands to `inner == 1 ? sum_short_slices<1>(...) : inner == 2 ? ...`, all inlined here.
  return ((inner == I + 1 ? (sum_short_slices<I + 1>(out, x, count, R), true) : false) || ...);
}

// out[o * inner + i] = sum over r < R of x[(o * R + r) * inner + i], for o < count.
HG_VECTOR_CLONES_AVX512 void sum_rows(float* __restrict out, const float* __restrict x, int64_t count,
                                      int64_t R, int64_t inner) {
  if (dispatch_short_rows(out, x, count, R, inner, std::make_integer_sequence<int, 32>{})) return;
  for (int64_t o = 0; o < count; ++o) sum_long_rows(out + o * inner, x + o * R * inner, R, inner);
}

// Slices of at most kTinySlice floats ([outer, 3, 1] from 'abcd->abc' with d = 3): summed in
// one pass over all of them, rows in order, without a call and an accumulator per slice (which
// cost ~8 ns an output, 5x torch on [262144, 3, 1]). Inner and R are both template arguments
// (50 instantiations): with the slice's shape known the compiler vectorizes across slices, and
// [262144, 3, 1] took 22 us where a runtime R took 115-190 (that loop's speed also swung by a
// third with the code's placement in the binary). Each output still adds its rows in order.
constexpr int64_t kTinySlice = 16;
template <int Inner, int R>
[[gnu::always_inline]] inline void sum_tiny_slices_of(float* __restrict out, const float* __restrict x, int64_t count) {
  for (int64_t o = 0; o < count; ++o)
    for (int i = 0; i < Inner; ++i) {
      float s = 0.f;
      for (int r = 0; r < R; ++r) s += x[(o * R + r) * Inner + i];
      out[o * Inner + i] = s;
    }
}
template <int Inner, int... Rm1>
[[gnu::always_inline]] inline bool dispatch_tiny_R(float* out, const float* x, int64_t count, int64_t R,
                                                   std::integer_sequence<int, Rm1...>) {
  return ((R == Rm1 + 1 ? (sum_tiny_slices_of<Inner, Rm1 + 1>(out, x, count), true) : false) || ...);
}
template <int... Im1>
[[gnu::always_inline]] inline bool dispatch_tiny(float* out, const float* x, int64_t count, int64_t R, int64_t inner,
                                                 std::integer_sequence<int, Im1...>) {
  return ((inner == Im1 + 1 ? dispatch_tiny_R<Im1 + 1>(out, x, count, R,
                                                       std::make_integer_sequence<int, kTinySlice / (Im1 + 1)>{})
                            : false) ||
          ...);
}
HG_VECTOR_CLONES void sum_tiny_slices(float* __restrict out, const float* __restrict x, int64_t count, int64_t R,
                                      int64_t inner) {
  if (dispatch_tiny(out, x, count, R, inner, std::make_integer_sequence<int, kTinySlice>{})) return;
  std::fill(out, out + count * inner, 0.f);  // R == 0: empty sums
}

}  // namespace

void sum_middle(float* out, const float* in, int64_t outer, int64_t R, int64_t inner) {
  const int64_t threads = omp_get_max_threads();
  const int64_t work = outer * R * inner;
  if (R * inner <= kTinySlice && R < 32) {
    parallel_ranges(
        outer, 4096, [&](int64_t o0, int64_t o1) { sum_tiny_slices(out + o0 * inner, in + o0 * R * inner, o1 - o0, R, inner); },
        /*align=*/1);
    return;
  }
  if (outer >= threads || work < (1 << 16) || inner >= (1 << 16)) {
    // Enough outputs to share out (or too little work to split): one slice per task.
    const int64_t grain = std::max<int64_t>(1, (1 << 15) / std::max<int64_t>(1, R * inner));
    parallel_ranges(
        outer, grain, [&](int64_t o0, int64_t o1) { sum_rows(out + o0 * inner, in + o0 * R * inner, o1 - o0, R, inner); },
        /*align=*/1);
    return;
  }
  // Few outputs, long R: each thread sums a contiguous run of rows into its own partial,
  // then the partials are added in thread order (deterministic for a given thread count).
  std::vector<float> partial(static_cast<size_t>(threads * inner));
  for (int64_t o = 0; o < outer; ++o) {
    std::fill(partial.begin(), partial.end(), 0.f);
    const float* x = in + o * R * inner;
    parallel_ranges(R, 1024, [&](int64_t r0, int64_t r1) {
      sum_rows(partial.data() + omp_get_thread_num() * inner, x + r0 * inner, 1, r1 - r0, inner);
    });
    for (int64_t i = 0; i < inner; ++i) {
      float s = 0.f;
      for (int64_t t = 0; t < threads; ++t) s += partial[t * inner + i];
      out[o * inner + i] = s;
    }
  }
}

}  // namespace handgrad::cpu
