// Batched GEMM with either operand transposed, row-major, no alpha/beta:
//   C[b] = op(A[b]) @ op(B[b])    for b < batch,
//   op(A[b]) is M x K: A[b] = A + b*stride_a, stored M x K (lda) or, if trans_a, K x M (lda);
//   op(B[b]) is K x N: B[b] = B + b*stride_b, stored K x N (ldb) or, if trans_b, N x K (ldb);
//   C[b]     is M x N, contiguous: C + b*M*N, leading dimension N.
// stride_a / stride_b may be 0 (one matrix shared by every batch entry). K = 0 gives zeros.
#pragma once

#include <cstdint>
#include <string>

namespace handgrad {

struct GemmShape {
  int64_t batch = 1, M = 0, N = 0, K = 0;
  bool trans_a = false, trans_b = false;
  int64_t lda = 0, ldb = 0;
  int64_t stride_a = 0, stride_b = 0;
};

// Validate leading dimensions against the shape (throws InternalError on a planner bug).
void check_gemm_shape(const GemmShape& s);

// The CUDA GEMM's tile for a product on a GPU of `sms` SMs (host code, so a test pins the
// choice on any machine). Narrow (128x32): tall-skinny products. Large (128x128, 8x8 per
// thread): products wider than 64 both ways, when enough of them fill the GPU. Small (64x64,
// 4x4 per thread) otherwise: more blocks for a small product, and a batch of tiny products
// (einsum's batched 3x2s) pads each of its outputs to a quarter of the area a Large tile would.
enum class GemmTile { Large, Small, Narrow };
inline GemmTile gemm_tile_for(const GemmShape& s, int sms) {
  if (s.N <= 32 && s.M >= 128) return GemmTile::Narrow;
  if (s.M <= 64 || s.N <= 64) return GemmTile::Small;
  const int64_t large_blocks = ((s.M + 127) / 128) * ((s.N + 127) / 128) * s.batch;
  return large_blocks >= sms ? GemmTile::Large : GemmTile::Small;
}

namespace cpu {
void gemm_batched(float* C, const float* A, const float* B, const GemmShape& s);
// Which library runs it, for `info` and the report: "oneDNN 2.6.3 sgemm; OpenBLAS (...) below
// 4096 multiply-adds", "OpenBLAS (...)" or the built-in GEMM.
std::string gemm_backend();
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// handgrad's tiled, register-blocked SGEMM.
void gemm_batched(float* C, const float* A, const float* B, const GemmShape& s);
// The same product through cuBLAS: the reference in tests and the bar in benchmarks.
void gemm_batched_cublas(float* C, const float* A, const float* B, const GemmShape& s);
}  // namespace cuda
#endif

}  // namespace handgrad
