#include "kernels/philox.h"
#include "kernels/random/random.h"

namespace handgrad {

namespace cpu {
void fill_uniform(float* out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
  const Philox rng(seed, stream);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = rng.uniform(offset + i);
}
void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t stream, uint64_t offset) {
  const Philox rng(seed, stream);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = rng.normal(offset + i);
}
void fill_uniform_int(int64_t* out, int64_t n, uint64_t bound, uint64_t seed, uint64_t stream,
                      uint64_t offset) {
  const Philox rng(seed, stream);
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) out[i] = static_cast<int64_t>(rng.uniform_int(offset + i, bound));
}
}  // namespace cpu

}  // namespace handgrad
