#include "host/einsum_ops.h"

#include <algorithm>

#include "host/dispatch.h"
#include "kernels/einsum/elementwise.h"
#include "kernels/einsum/reduce.h"
#include "kernels/einsum/strided_copy.h"

namespace handgrad::ops {

namespace {
void same_device(const Tensor& a, const Tensor& b, const char* op) {
  HG_REQUIRE(a.device() == b.device(), op, ": operands are on different devices (",
             device_name(a.device()), " and ", device_name(b.device()), ")");
}
// Largest offset a strided read can reach, to check a view stays inside its tensor.
int64_t max_offset(const Shape& shape, const Shape& strides) {
  int64_t off = 0;
  for (size_t d = 0; d < shape.size(); ++d) {
    if (shape[d] == 0) return -1;  // empty: nothing is read
    off += (shape[d] - 1) * strides[d];
  }
  return off;
}
}  // namespace

void mul_into(Tensor& out, const Tensor& a, const Tensor& b) {
  HG_REQUIRE(a.shape() == b.shape() && out.shape() == a.shape(), "mul: shapes ",
             shape_str(a.shape()), ", ", shape_str(b.shape()), " -> ", shape_str(out.shape()));
  same_device(a, b, "mul");
  same_device(a, out, "mul");
  HG_ON_DEVICE(a.device(), mul, out.data<float>(), a.data<float>(), b.data<float>(), a.numel());
}

Tensor mul(const Tensor& a, const Tensor& b) {
  Tensor out = Tensor::empty(a.shape(), a.device());
  mul_into(out, a, b);
  return out;
}

Tensor mul_broadcast(const Tensor& a, const Shape& stride_a, const Tensor& b,
                     const Shape& stride_b, const Shape& out_shape) {
  same_device(a, b, "mul_broadcast");
  HG_ASSERT(stride_a.size() == out_shape.size() && stride_b.size() == out_shape.size());
  HG_ASSERT(max_offset(out_shape, stride_a) < a.numel() && max_offset(out_shape, stride_b) < b.numel(),
            "broadcast view out of bounds");
  Tensor out = Tensor::empty(out_shape, a.device());
  if (out.numel() == 0) return out;
  const StridedView<2> view = make_strided_view<2>(out_shape, {stride_a, stride_b});
  HG_ON_DEVICE(a.device(), mul_broadcast, out.data<float>(), a.data<float>(), b.data<float>(), view);
  return out;
}

void sum_middle_into(Tensor& out, const Tensor& in, int64_t outer, int64_t R, int64_t inner) {
  HG_ASSERT(outer * R * inner == in.numel() && outer * inner == out.numel(), "sum_middle sizes");
  same_device(in, out, "sum");
  if (in.device() == Device::CPU)
    return cpu::sum_middle(out.data<float>(), in.data<float>(), outer, R, inner);
  const int64_t ws = HG_CUDA(int64_t, sum_middle_workspace, outer, R, inner);
  Tensor workspace = ws ? Tensor::empty({ws}, Device::CUDA) : Tensor();
  HG_CUDA(void, sum_middle, out.data<float>(), in.data<float>(), outer, R, inner,
          ws ? workspace.data<float>() : nullptr);
  // The workspace goes back to the allocator's cache while the kernel may still be queued:
  // safe, because all work runs on one stream, in order.
}

Tensor sum_middle(const Tensor& in, int64_t outer, int64_t R, int64_t inner, const Shape& out_shape) {
  Tensor out = Tensor::empty(out_shape, in.device());
  sum_middle_into(out, in, outer, R, inner);
  return out;
}

Tensor sum_axes(const Tensor& in, const std::vector<int>& axes) {
  const int n = in.ndim();
  std::vector<bool> summed(n, false);
  for (int a : axes) {
    HG_ASSERT(a >= 0 && a < n && !summed[a], "bad axis ", a);
    summed[a] = true;
  }
  Shape shape = in.shape();
  if (in.numel() == 0) {  // sums over nothing are 0 (and the products below could overflow)
    Shape kept;
    for (int d = 0; d < n; ++d)
      if (!summed[d]) kept.push_back(shape[d]);
    return Tensor::zeros(kept, in.device());
  }
  // Sum the last run of summed axes first: each run is one [outer, R, inner] pass.
  Tensor cur;
  const Tensor* src = &in;
  int end = n;
  while (true) {
    while (end > 0 && !summed[end - 1]) --end;
    if (end == 0) break;
    int begin = end;
    while (begin > 0 && summed[begin - 1]) --begin;
    int64_t outer = 1, R = 1, inner = 1;
    for (int d = 0; d < begin; ++d) outer *= shape[d];
    for (int d = begin; d < end; ++d) R *= shape[d];
    for (int d = end; d < static_cast<int>(shape.size()); ++d) inner *= shape[d];
    Shape next(shape.begin(), shape.begin() + begin);
    next.insert(next.end(), shape.begin() + end, shape.end());
    Tensor out = sum_middle(*src, outer, R, inner, next);
    summed.erase(summed.begin() + begin, summed.begin() + end);
    shape = next;
    cur = std::move(out);
    src = &cur;
    end = begin;
  }
  return src == &in ? in.clone() : std::move(cur);
}

Tensor strided_copy(const Tensor& in, const Shape& out_shape, const Shape& in_strides) {
  HG_ASSERT(in_strides.size() == out_shape.size());
  HG_ASSERT(max_offset(out_shape, in_strides) < in.numel(), "strided view out of bounds");
  Tensor out = Tensor::empty(out_shape, in.device());
  if (out.numel() == 0) return out;
  const StridedView<1> view = make_strided_view<1>(out_shape, {in_strides});
  HG_ON_DEVICE(in.device(), strided_copy, out.data<float>(), in.data<float>(), view);
  return out;
}

Tensor permute(const Tensor& in, const std::vector<int>& perm) {
  HG_ASSERT(static_cast<int>(perm.size()) == in.ndim(), "permute rank");
  const Shape st = contiguous_strides(in.shape());
  Shape shape, strides;
  for (int p : perm) {
    shape.push_back(in.shape()[p]);
    strides.push_back(st[p]);
  }
  return strided_copy(in, shape, strides);
}

void gemm_batched_into(Tensor& C, const Tensor& A, const Tensor& B, const GemmShape& s) {
  check_gemm_shape(s);
  same_device(A, B, "gemm");
  same_device(A, C, "gemm");
  HG_ASSERT(C.numel() == s.batch * s.M * s.N, "gemm output size");
  if (s.batch > 0 && s.M > 0 && s.N > 0 && s.K > 0) {
    const int64_t a_rows = s.trans_a ? s.K : s.M, a_cols = s.trans_a ? s.M : s.K;
    const int64_t b_rows = s.trans_b ? s.N : s.K, b_cols = s.trans_b ? s.K : s.N;
    HG_ASSERT((s.batch - 1) * s.stride_a + (a_rows - 1) * s.lda + a_cols <= A.numel(), "A bounds");
    HG_ASSERT((s.batch - 1) * s.stride_b + (b_rows - 1) * s.ldb + b_cols <= B.numel(), "B bounds");
  }
  HG_ON_DEVICE(A.device(), gemm_batched, C.data<float>(), A.data<float>(), B.data<float>(), s);
}

Tensor gemm_batched(const Tensor& A, const Tensor& B, const GemmShape& s) {
  Tensor C = Tensor::empty({s.batch, s.M, s.N}, A.device());
  gemm_batched_into(C, A, B, s);
  return C;
}

}  // namespace handgrad::ops
