#include "host/philox.h"
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

namespace {
[[maybe_unused]] [[noreturn]] void no_cuda() { throw UserError("CUDA tensor, but this build has no CUDA backend"); }
}  // namespace

void fill_uniform(Tensor& t, uint64_t seed, uint64_t stream, uint64_t offset) {
  if (t.device() == Device::CPU) return cpu::fill_uniform(t.data<float>(), t.numel(), seed, stream, offset);
#ifdef HANDGRAD_WITH_CUDA
  cuda::fill_uniform(t.data<float>(), t.numel(), seed, stream, offset);
#else
  no_cuda();
#endif
}

void fill_normal(Tensor& t, uint64_t seed, uint64_t stream, uint64_t offset) {
  if (t.device() == Device::CPU) return cpu::fill_normal(t.data<float>(), t.numel(), seed, stream, offset);
#ifdef HANDGRAD_WITH_CUDA
  cuda::fill_normal(t.data<float>(), t.numel(), seed, stream, offset);
#else
  no_cuda();
#endif
}

void fill_uniform_int(Tensor& t, uint64_t bound, uint64_t seed, uint64_t stream, uint64_t offset) {
  HG_REQUIRE(bound > 0, "uniform_int needs a positive bound");
  if (t.device() == Device::CPU)
    return cpu::fill_uniform_int(t.data<int64_t>(), t.numel(), bound, seed, stream, offset);
#ifdef HANDGRAD_WITH_CUDA
  cuda::fill_uniform_int(t.data<int64_t>(), t.numel(), bound, seed, stream, offset);
#else
  no_cuda();
#endif
}

Tensor randn(const Shape& shape, uint64_t seed, uint64_t stream, Device device) {
  Tensor t = Tensor::empty(shape, device);
  fill_normal(t, seed, stream);
  return t;
}

}  // namespace handgrad
