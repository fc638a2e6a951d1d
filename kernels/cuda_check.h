// Checked CUDA / cuBLAS calls. Every runtime call goes through CUDA_CHECK, every cuBLAS call
// through CUBLAS_CHECK, every kernel launch is followed by CUDA_CHECK_LAUNCH(). A failure
// throws InternalError carrying file:line and the library's own error text.
#pragma once
#ifdef HANDGRAD_WITH_CUDA
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "kernels/error.h"

namespace handgrad::detail {
[[noreturn]] inline void throw_cuda(cudaError_t err, const char* expr, const char* file, int line) {
  throw InternalError(cat(file, ":", line, ": CUDA error ", cudaGetErrorName(err), " (",
                          cudaGetErrorString(err), ") in ", expr));
}
[[noreturn]] inline void throw_cublas(cublasStatus_t st, const char* expr, const char* file,
                                      int line) {
  throw InternalError(cat(file, ":", line, ": cuBLAS error ", cublasGetStatusName(st), " (",
                          cublasGetStatusString(st), ") in ", expr));
}
}  // namespace handgrad::detail

#define CUDA_CHECK(expr)                                                             \
  do {                                                                               \
    cudaError_t hg_err_ = (expr);                                                    \
    if (hg_err_ != cudaSuccess) ::handgrad::detail::throw_cuda(hg_err_, #expr, __FILE__, __LINE__); \
  } while (0)

#define CUBLAS_CHECK(expr)                                                           \
  do {                                                                               \
    cublasStatus_t hg_st_ = (expr);                                                  \
    if (hg_st_ != CUBLAS_STATUS_SUCCESS)                                             \
      ::handgrad::detail::throw_cublas(hg_st_, #expr, __FILE__, __LINE__);           \
  } while (0)

// After every <<<...>>>: catches bad launch configurations at the launch site.
#define CUDA_CHECK_LAUNCH() CUDA_CHECK(cudaGetLastError())

#endif  // HANDGRAD_WITH_CUDA
