// einsum: the equation, then (when it parses) the planner and the CPU kernels on small operands
// whose shapes come from the input's first bytes.
#include <vector>

#include "host/einsum.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace handgrad;
  if (size < 1) return 0;
  const size_t n_dims = data[0] % 8;  // the first bytes: operand sizes 0..3 per dimension
  if (size < 1 + 2 * n_dims) return 0;
  const std::string equation(reinterpret_cast<const char*>(data + 1 + 2 * n_dims), size - 1 - 2 * n_dims);
  return fuzz::expect_user_errors_only([&] {
    const EinsumEquation eq = parse_einsum(equation);
    std::vector<Tensor> ops;
    size_t next = 0;
    for (size_t k = 0; k < eq.inputs.size() && k < 2; ++k) {
      Shape shape;
      for (size_t d = 0; d < 4 && next < n_dims; ++d, ++next) shape.push_back(data[1 + next] % 4);
      ops.push_back(Tensor::full(shape, 1.f));
    }
    std::vector<const Tensor*> ptrs;
    for (const Tensor& t : ops) ptrs.push_back(&t);
    einsum(equation, ptrs);
  });
}
