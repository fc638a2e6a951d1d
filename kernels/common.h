// What every kernel family and the runtime above it share, at the very bottom of the layers
// (kernels <- host <- models <- commands): the host/device function qualifier, and the shape
// type and rank limit of the tensors the kernels see.
#pragma once
#include <cstdint>
#include <vector>

// A function compiled for both the host and the device (plain inline in a C++-only build). In a
// SIMT build it is compiled into the emulated kernels and into the CPU twins with other flags
// (instrumented accesses there, ASan here): always inlined, so that the linker never gives a
// kernel the uninstrumented copy.
#if defined(__CUDACC__)
#define HG_HD __host__ __device__ __forceinline__
#elif defined(HANDGRAD_SIMT)
#define HG_HD inline __attribute__((always_inline))
#else
#define HG_HD inline
#endif

namespace handgrad {

// Einsum gives a tensor one dim per label: up to 52 letters, and an ellipsis adds more; 64
// covers that. The strided kernels' parameter structs hold this many dims (einsum/strided.h).
constexpr int kMaxDims = 64;
using Shape = std::vector<int64_t>;

// The most blocks a launch may have in gridDim.y and in gridDim.z: 65535 on every GPU; launchers
// clamp to it and their kernels stride past it. The SIMT emulator refuses more than 512, so that
// its tests reach those strides with a few hundred emulated blocks, not 65536 (40 s under ASan).
#ifdef HANDGRAD_SIMT
constexpr int64_t kMaxGridYZ = 512;
#else
constexpr int64_t kMaxGridYZ = 65535;
#endif

// Row-major strides of a contiguous tensor of this shape, in elements. Saturating: a tensor with
// a zero dim may have others whose product leaves int64 (it holds no element, so no stride is
// ever used to reach one), and that must not overflow (undefined behaviour).
inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    if (__builtin_mul_overflow(acc, s[i], &acc)) acc = INT64_MAX;
  }
  return st;
}

}  // namespace handgrad
