// A deliberately naive float64 einsum: loops over every assignment of every index and adds up
// products. Exponential in the number of indices and slow, but short enough to check by eye;
// it is the reference the planner and the kernels are tested against (and the report's check).
#pragma once
#include <string>
#include <vector>

#include "host/tensor.h"

namespace handgrad {

struct ReferenceResult {
  Shape shape;
  std::vector<double> values;
};

// Operands: CPU float32 tensors. Equation semantics as einsum() (host/einsum.h).
ReferenceResult einsum_reference(const std::string& equation,
                                 const std::vector<const Tensor*>& operands);

// max |a - b| / max(max |b|, tiny): a relative error over the whole tensor.
double relative_error(const std::vector<float>& got, const std::vector<double>& want);

}  // namespace handgrad
