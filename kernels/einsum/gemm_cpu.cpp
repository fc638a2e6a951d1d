#include <omp.h>

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/error.h"
#include "kernels/einsum/gemm.h"
#ifdef HANDGRAD_WITH_OPENBLAS
#include <cblas.h>
#endif
#ifdef HANDGRAD_WITH_ONEDNN
#include <dnnl.h>
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
// The built-in GEMM (HANDGRAD_OPENBLAS=OFF), for builds that ship without OpenBLAS, where the
// CPU only serves as the reference on test-sized inputs. C (M x N, row stride ldc) =
// op(A) op(B). Non-transposed B: row i of C is a sum of rows of B (contiguous axpys).
// Transposed B: each C entry is a dot product of two contiguous K-vectors (A's row or, for a
// transposed A, its column copied out once per row).
void gemm_one(float* C, int64_t ldc, const float* A, const float* B, int64_t M, int64_t N,
              const GemmShape& s) {
  const int64_t K = s.K;
  std::vector<float> a_col(s.trans_a ? K : 0);
  for (int64_t i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (!s.trans_b) {
      std::memset(c, 0, sizeof(float) * N);
      for (int64_t k = 0; k < K; ++k) {
        const float a = s.trans_a ? A[k * s.lda + i] : A[i * s.lda + k];
        const float* b = B + k * s.ldb;
#pragma omp simd
        for (int64_t j = 0; j < N; ++j) c[j] += a * b[j];
      }
      continue;
    }
    const float* a = A + i * s.lda;
    if (s.trans_a) {
      for (int64_t k = 0; k < K; ++k) a_col[k] = A[k * s.lda + i];
      a = a_col.data();
    }
    for (int64_t j = 0; j < N; ++j) {
      const float* b = B + j * s.ldb;
      float acc = 0.f;
#pragma omp simd reduction(+ : acc)
      for (int64_t k = 0; k < K; ++k) acc += a[k] * b[k];
      c[j] = acc;
    }
  }
}
}  // namespace
#endif

namespace {
#ifdef HANDGRAD_WITH_ONEDNN
// From this many multiply-adds a product goes to oneDNN's sgemm: it generates its kernel for the
// CPU it finds, where OpenBLAS 0.3.21 takes a CPU it does not know (Zen 5) for Haswell and runs
// AVX2: 4096x1024x1024 (NT, one thread each of 2) took 20.0 ms against OpenBLAS's 37.4, and
// 4096x128x128 0.32 against 0.63 ms. Below it OpenBLAS's smaller call overhead wins (24x6x5:
// 0.37 against 0.94 us).
constexpr int64_t kOneDnnMinMacs = 4096;
#endif

// One product C = op(A) op(B) on the calling thread (inside our parallel region both libraries
// run single-threaded).
void gemm_serial(float* c, const float* a, const float* b, int64_t M, int64_t N, const GemmShape& s) {
#ifdef HANDGRAD_WITH_ONEDNN
  if (M * N * s.K >= kOneDnnMinMacs) {
    const dnnl_status_t status = dnnl_sgemm(s.trans_a ? 'T' : 'N', s.trans_b ? 'T' : 'N', M, N, s.K, 1.0f, a, s.lda,
                                            b, s.ldb, 0.0f, c, s.N);
    HG_ASSERT(status == dnnl_success, "oneDNN sgemm failed with status ", static_cast<int>(status));
    return;
  }
#endif
#ifdef HANDGRAD_WITH_OPENBLAS
  cblas_sgemm(CblasRowMajor, s.trans_a ? CblasTrans : CblasNoTrans,
              s.trans_b ? CblasTrans : CblasNoTrans, static_cast<blasint>(M),
              static_cast<blasint>(N), static_cast<blasint>(s.K), 1.0f, a,
              static_cast<blasint>(s.lda), b, static_cast<blasint>(s.ldb), 0.0f, c,
              static_cast<blasint>(s.N));
#else
  gemm_one(c, s.N, a, b, M, N, s);
#endif
}
}  // namespace

std::string gemm_backend() {
#ifdef HANDGRAD_WITH_OPENBLAS
  const std::string blas = std::string("OpenBLAS (") + openblas_get_config() + ")";
#else
  const std::string blas = "built-in blocked GEMM";
#endif
#ifdef HANDGRAD_WITH_ONEDNN
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) +
         " sgemm; " + blas + " below " + std::to_string(kOneDnnMinMacs) + " multiply-adds";
#else
  return blas;
#endif
}

void gemm_batched(float* C, const float* A, const float* B, const GemmShape& s) {
  check_gemm_shape(s);
  if (s.M == 0 || s.N == 0 || s.batch == 0) return;
  if (s.K == 0) {
    std::memset(C, 0, sizeof(float) * s.batch * s.M * s.N);
    return;
  }
  // Tasks: batch entries x row blocks (or column blocks when M is short), ~64k MACs at least.
  // Inside our parallel region the OpenMP build of OpenBLAS runs each call on its own thread.
  const int64_t threads = omp_get_max_threads();
  const bool split_rows = s.M >= s.N || s.M >= 64 * threads;
  const int64_t extent = split_rows ? s.M : s.N;
  const int64_t min_block = std::max<int64_t>(16, (1 << 16) / std::max<int64_t>(1, (split_rows ? s.N : s.M) * s.K));
  const int64_t blocks_wanted = std::max<int64_t>(1, (threads + s.batch - 1) / s.batch);
  const int64_t block = std::max(min_block, (extent + blocks_wanted - 1) / blocks_wanted);
  const int64_t per_batch = (extent + block - 1) / block;
  if (s.batch * per_batch == 1) return gemm_serial(C, A, B, s.M, s.N, s);  // no team for one task
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < s.batch * per_batch; ++task) {
    const int64_t bt = task / per_batch, i0 = (task % per_batch) * block;
    const int64_t len = std::min(block, extent - i0);
    float* c = C + bt * s.M * s.N;
    const float* a = A + bt * s.stride_a;
    const float* b = B + bt * s.stride_b;
    if (split_rows) {  // rows i0.. of op(A) and of C
      gemm_serial(c + i0 * s.N, a + (s.trans_a ? i0 : i0 * s.lda), b, len, s.N, s);
    } else {  // columns i0.. of op(B) and of C
      gemm_serial(c + i0, a, b + (s.trans_b ? i0 * s.ldb : i0), s.M, len, s);
    }
  }
}

}  // namespace cpu
}  // namespace handgrad
