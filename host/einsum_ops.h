// Tensor-level entries of the einsum kernels: validate shapes and devices, allocate outputs,
// dispatch to the CPU twin or the CUDA kernel by the tensors' device.
#pragma once
#include <vector>

#include "host/tensor.h"
#include "kernels/einsum/gemm.h"

namespace handgrad::ops {

// a * b, same shape.
Tensor mul(const Tensor& a, const Tensor& b);
void mul_into(Tensor& out, const Tensor& a, const Tensor& b);

// out[idx] = a[idx . stride_a] * b[idx . stride_b] over out_shape (strides in elements; 0
// broadcasts).
Tensor mul_broadcast(const Tensor& a, const Shape& stride_a, const Tensor& b,
                     const Shape& stride_b, const Shape& out_shape);

// Sum a contiguous tensor, viewed as [outer, R, inner], over R.
Tensor sum_middle(const Tensor& in, int64_t outer, int64_t R, int64_t inner, const Shape& out_shape);
void sum_middle_into(Tensor& out, const Tensor& in, int64_t outer, int64_t R, int64_t inner);

// Sum over the axes in `axes` (any set; the result drops them).
Tensor sum_axes(const Tensor& in, const std::vector<int>& axes);

// out (contiguous, out_shape)[idx] = in[idx . in_strides].
Tensor strided_copy(const Tensor& in, const Shape& out_shape, const Shape& in_strides);
// Output axis d is input axis perm[d].
Tensor permute(const Tensor& in, const std::vector<int>& perm);

// Batched GEMM (gemm.h) on tensors; C is [batch, M, N].
Tensor gemm_batched(const Tensor& A, const Tensor& B, const GemmShape& s);
void gemm_batched_into(Tensor& C, const Tensor& A, const Tensor& B, const GemmShape& s);

}  // namespace handgrad::ops
