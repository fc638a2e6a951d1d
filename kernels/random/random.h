// Random fills from the shared Philox stream (kernels/philox.h; on tensors: host/random.h).
// Contract: element i of the output is Philox(seed, stream).{uniform,normal,uniform_int}(offset
// + i), on either device, so a CPU run and a GPU run with the same seed see the same numbers (up
// to the last ulp of log/cos for normal(), computed in double on both sides).
#pragma once
#include <cstdint>

namespace handgrad {

namespace cpu {
void fill_uniform(float* out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);
void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);
void fill_uniform_int(int64_t* out, int64_t n, uint64_t bound, uint64_t seed, uint64_t stream,
                      uint64_t offset);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void fill_uniform(float* out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);
void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset);
void fill_uniform_int(int64_t* out, int64_t n, uint64_t bound, uint64_t seed, uint64_t stream,
                      uint64_t offset);
}  // namespace cuda
#endif

}  // namespace handgrad
