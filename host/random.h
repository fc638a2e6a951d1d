// Random tensors from the shared Philox streams (kernels/random/random.h states the contract),
// on the tensor's device.
#pragma once
#include <cstdint>

#include "host/tensor.h"

namespace handgrad {

void fill_uniform(Tensor& t, uint64_t seed, uint64_t stream = 0, uint64_t offset = 0);
void fill_normal(Tensor& t, uint64_t seed, uint64_t stream = 0, uint64_t offset = 0);
void fill_uniform_int(Tensor& t, uint64_t bound, uint64_t seed, uint64_t stream = 0, uint64_t offset = 0);
Tensor randn(const Shape& shape, uint64_t seed, uint64_t stream = 0, Device device = Device::CPU);

}  // namespace handgrad
