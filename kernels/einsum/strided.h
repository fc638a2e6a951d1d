// A strided view over a row-major output shape: the shared index math of the elementwise and
// strided-copy kernels (host and device). Output element `linear` (row-major in `shape`) reads
// operand k at offset sum_d idx_d * stride[k][d]; a stride of 0 broadcasts.
#pragma once
#include <array>
#include <cstddef>
#include <cstdint>

#include "kernels/common.h"

namespace handgrad {

// Kernels take a view by value as `const __grid_constant__`: its 0.5-2 KB are read in place from
// the parameter space. Indexed by a runtime axis, a plain by-value struct may be copied into a
// stack frame per thread first; the build's ptxas report (cmake/ptxas_report.py) fails on that.
template <int K>
struct StridedView {
  int ndim = 0;
  int64_t shape[kMaxDims] = {};
  int64_t stride[K][kMaxDims] = {};

  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= shape[d];
    return n;
  }

  // Offsets of output element `linear` in each operand. Index is int64_t or uint32_t: the
  // kernels pick 32-bit division when the whole tensor fits, which is several times cheaper.
  template <typename Index>
  HG_HD void offsets(Index linear, int64_t (&off)[K]) const {
    for (int k = 0; k < K; ++k) off[k] = 0;
    for (int d = ndim - 1; d >= 0; --d) {
      const Index n = static_cast<Index>(shape[d]);
      const Index idx = linear % n;
      linear /= n;
      for (int k = 0; k < K; ++k) off[k] += static_cast<int64_t>(idx) * stride[k][d];
    }
  }
};

// Build a view of `shape` with the operands' strides, simplified: size-1 dims are dropped and
// neighbouring dims that are contiguous with each other in every operand (and in the output)
// are merged, so most views end up rank 1 or 2.
template <int K>
StridedView<K> make_strided_view(const Shape& shape, const std::array<Shape, K>& strides) {
  StridedView<K> v;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 1) continue;
    bool merge = v.ndim > 0;
    for (int k = 0; k < K && merge; ++k)
      merge = v.stride[k][v.ndim - 1] == strides[k][d] * shape[d];
    if (merge) {
      v.shape[v.ndim - 1] *= shape[d];
      for (int k = 0; k < K; ++k) v.stride[k][v.ndim - 1] = strides[k][d];
    } else {
      v.shape[v.ndim] = shape[d];
      for (int k = 0; k < K; ++k) v.stride[k][v.ndim] = strides[k][d];
      ++v.ndim;
    }
  }
  return v;
}

}  // namespace handgrad
