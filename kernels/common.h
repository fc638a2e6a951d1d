// What every kernel family and the runtime above it share, at the very bottom of the layers
// (kernels <- host <- models <- commands): the host/device function qualifier, and the shape
// type and rank limit of the tensors the kernels see.
#pragma once
#include <cstdint>
#include <vector>

// A function compiled for both the host and the device (plain inline in a C++-only build).
#if defined(__CUDACC__)
#define HG_HD __host__ __device__ __forceinline__
#else
#define HG_HD inline
#endif

namespace handgrad {

// Einsum gives a tensor one dim per label: up to 52 letters, and an ellipsis adds more; 64
// covers that. The strided kernels' parameter structs hold this many dims (einsum/strided.h).
constexpr int kMaxDims = 64;
using Shape = std::vector<int64_t>;

// Row-major strides of a contiguous tensor of this shape, in elements.
inline Shape contiguous_strides(const Shape& s) {
  Shape st(s.size());
  int64_t acc = 1;
  for (int i = static_cast<int>(s.size()) - 1; i >= 0; --i) {
    st[i] = acc;
    acc *= s[i];
  }
  return st;
}

}  // namespace handgrad
