// Work splitting for the CPU twins: one contiguous range per OpenMP thread, or the caller's
// thread alone when the work is too small to pay for waking the team (a few microseconds).
#pragma once
#include <omp.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

// Hot loops are compiled twice, for AVX2+FMA and for baseline x86-64, and the loader picks the
// best at run time: one binary that is fast on current CPUs and still runs on old ones.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HG_VECTOR_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HG_VECTOR_CLONES
#endif
// The same with an AVX-512 clone, for loops whose order of additions does not depend on the
// vector width (so every clone gives the same bits) and that measurably gain from it.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define HG_VECTOR_CLONES_AVX512 __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define HG_VECTOR_CLONES_AVX512
#endif

namespace handgrad::cpu {

// v where cond holds, else +0, as a bit mask. Written as a ternary, GCC compiles this to a branch
// (the load of v becomes conditional and the loop stays scalar), and a ReLU's mask is a coin
// flip that the branch predictor loses: 3x slower on the ResNet's gradients.
inline float keep_if(bool cond, float v) {
  uint32_t bits;
  std::memcpy(&bits, &v, sizeof bits);
  bits &= 0u - static_cast<uint32_t>(cond);
  std::memcpy(&v, &bits, sizeof v);
  return v;
}

// Calls fn(begin, end) over [0, n) split into at most omp_get_max_threads() contiguous ranges,
// each at least `grain` long. Range boundaries are multiples of `align`: 16 for ranges of floats,
// so vector loops stay aligned; 1 for coarse units (slices, rows), where rounding up to 16 hands
// a few units all to the first thread (4 slices of a [4, 1048576, 5] sum ran on one of 2).
template <typename Fn>
void parallel_ranges(int64_t n, int64_t grain, Fn&& fn, int64_t align = 16) {
  const int64_t threads = std::min<int64_t>(omp_get_max_threads(), n / std::max<int64_t>(grain, 1));
  if (threads <= 1) {
    if (n > 0) fn(int64_t(0), n);
    return;
  }
#pragma omp parallel num_threads(static_cast<int>(threads))
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t chunk = ((n + nt - 1) / nt + align - 1) / align * align;
    const int64_t begin = std::min(n, t * chunk), end = std::min(n, begin + chunk);
    if (begin < end) fn(begin, end);
  }
}

}  // namespace handgrad::cpu
