// Shared helpers for the GoogleTest suite.
#pragma once
#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <vector>

#include "host/device.h"
#include "host/tensor.h"
#include "host/random.h"
#include "kernels/random/random.h"

namespace handgrad::test {

// Skip a CUDA test with one visible reason when no GPU can run it (one that needs cuBLAS, cuDNN or
// CUDA graphs: not even the SIMT emulator can).
#define HG_SKIP_WITHOUT_GPU()                                                       \
  do {                                                                              \
    if (!::handgrad::cuda_available())                                              \
      GTEST_SKIP() << "CUDA test skipped, no usable GPU: " << ::handgrad::cuda_unavailable_reason(); \
  } while (0)

// Skip a test of handgrad's own CUDA kernels where they cannot run: they run on a GPU, and in a
// SIMT build on the emulator (kernels/simt).
#define HG_SKIP_UNLESS_KERNELS_RUN()                                                \
  do {                                                                              \
    if (!::handgrad::cuda_kernels_run())                                            \
      GTEST_SKIP() << "CUDA test skipped, no usable GPU: " << ::handgrad::cuda_unavailable_reason(); \
  } while (0)

inline Tensor random_tensor(const Shape& shape, uint64_t seed, Device dev = Device::CPU) {
  return randn(shape, seed, 0, dev);
}

// A tensor full of NaN: any element a kernel forgets to write fails the comparison.
inline Tensor poisoned(const Shape& shape, Device dev = Device::CPU) {
  return Tensor::full(shape, std::numeric_limits<float>::quiet_NaN(), dev);
}

// max |got - want| / max(max |want|, 1e-30); NaN anywhere -> infinity.
inline double rel_err(const std::vector<float>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return INFINITY;
  double scale = 1e-30, err = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::isnan(got[i]) || std::isnan(want[i])) return INFINITY;
    scale = std::max(scale, std::fabs(want[i]));
    err = std::max(err, std::fabs(double(got[i]) - want[i]));
  }
  return err / scale;
}

inline double rel_err(const std::vector<float>& got, const std::vector<float>& want) {
  return rel_err(got, std::vector<double>(want.begin(), want.end()));
}

}  // namespace handgrad::test
