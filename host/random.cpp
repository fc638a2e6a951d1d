#include "host/random.h"

#include "host/dispatch.h"
#include "kernels/random/random.h"

namespace handgrad {

void fill_uniform(Tensor& t, uint64_t seed, uint64_t stream, uint64_t offset) {
  HG_ON_DEVICE(t.device(), fill_uniform, t.data<float>(), t.numel(), seed, stream, offset);
}

void fill_normal(Tensor& t, uint64_t seed, uint64_t stream, uint64_t offset) {
  HG_ON_DEVICE(t.device(), fill_normal, t.data<float>(), t.numel(), seed, stream, offset);
}

void fill_uniform_int(Tensor& t, uint64_t bound, uint64_t seed, uint64_t stream, uint64_t offset) {
  HG_REQUIRE(bound > 0, "uniform_int needs a positive bound");
  HG_ON_DEVICE(t.device(), fill_uniform_int, t.data<int64_t>(), t.numel(), bound, seed, stream, offset);
}

Tensor randn(const Shape& shape, uint64_t seed, uint64_t stream, Device device) {
  Tensor t = Tensor::empty(shape, device);
  fill_normal(t, seed, stream);
  return t;
}

}  // namespace handgrad
