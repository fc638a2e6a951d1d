#include <algorithm>
#include <cstring>

#include "host/error.h"
#include "kernels/einsum/gemm.h"
#ifdef HANDGRAD_WITH_OPENBLAS
#include <cblas.h>
#endif

namespace handgrad {

void check_gemm_shape(const GemmShape& s) {
  HG_ASSERT(s.batch >= 0 && s.M >= 0 && s.N >= 0 && s.K >= 0, "negative GEMM size");
  HG_ASSERT(s.lda >= std::max<int64_t>(1, s.trans_a ? s.M : s.K), "lda ", s.lda);
  HG_ASSERT(s.ldb >= std::max<int64_t>(1, s.trans_b ? s.K : s.N), "ldb ", s.ldb);
  HG_ASSERT(s.stride_a >= 0 && s.stride_b >= 0, "negative batch stride");
}

namespace cpu {

#ifndef HANDGRAD_WITH_OPENBLAS
namespace {
// The built-in GEMM (HANDGRAD_OPENBLAS=OFF): i-k-j order with a K block, so the inner loop is a
// contiguous axpy into a C row the compiler vectorises. Meant for test-sized inputs.
void gemm_one(float* C, const float* A, const float* B, const GemmShape& s) {
  const int64_t M = s.M, N = s.N, K = s.K;
#pragma omp parallel for schedule(static) if (M * N * K > (1 << 18))
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * N;
    std::memset(c, 0, sizeof(float) * N);
    for (int64_t k = 0; k < K; ++k) {
      const float a = s.trans_a ? A[k * s.lda + i] : A[i * s.lda + k];
      if (!s.trans_b) {
        const float* b = B + k * s.ldb;
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
      } else {
        for (int64_t j = 0; j < N; ++j) c[j] += a * B[j * s.ldb + k];
      }
    }
  }
}
}  // namespace
#endif

void gemm_batched(float* C, const float* A, const float* B, const GemmShape& s) {
  check_gemm_shape(s);
  if (s.M == 0 || s.N == 0) return;
  for (int64_t b = 0; b < s.batch; ++b) {
    float* c = C + b * s.M * s.N;
    const float* a = A + b * s.stride_a;
    const float* bb = B + b * s.stride_b;
    if (s.K == 0) {
      std::memset(c, 0, sizeof(float) * s.M * s.N);
      continue;
    }
#ifdef HANDGRAD_WITH_OPENBLAS
    cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
                s.trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(s.M),
                static_cast<blasint>(s.N), static_cast<blasint>(s.K), 1.0f, a,
                static_cast<blasint>(s.lda), bb, static_cast<blasint>(s.ldb), 0.0f, c,
                static_cast<blasint>(s.N));
#else
    gemm_one(c, a, bb, s);
#endif
  }
}

}  // namespace cpu
}  // namespace handgrad
