// The contraction-order planner on any problem: the bytes give the operand count (2..64), each
// operand's labels (a 64-bit mask of 0..63) and each label's size (0, 1, small, or 2^40..2^55),
// and every order (exact, greedy, left to right) must give a valid plan - every operand used
// once, the output's labels at the end - whose cost is not NaN, without crashing or hanging.
#include <cmath>
#include <map>
#include <vector>

#include "host/einsum.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace handgrad;
  if (size < 2) return 0;
  size_t at = 0;
  const auto byte = [&]() -> uint8_t { return at < size ? data[at++] : 0; };
  const int n = 2 + byte() % 63;
  std::map<int, int64_t> sizes;
  for (int l = 0; l < 64; ++l) {
    const uint8_t b = byte();
    sizes[l] = b < 16 ? 0 : b < 32 ? 1 : b < 240 ? 2 + b % 7 : int64_t(1) << (b - 200);  // 2^40..2^55
  }
  std::vector<std::vector<int>> inputs(n);
  std::vector<int> count(64, 0);
  for (auto& in : inputs) {
    uint64_t mask = 0;
    for (int k = 0; k < 8; ++k) mask |= uint64_t(byte()) << (8 * k);
    for (int l = 0; l < 64; ++l)
      if (mask >> l & 1) in.push_back(l), ++count[l];
  }
  std::vector<int> output;
  const uint64_t out_mask = uint64_t(byte()) | uint64_t(byte()) << 8;
  for (int l = 0; l < 64; ++l)
    if (count[l] > 0 && (out_mask >> (l % 16) & 1)) output.push_back(l);
  return fuzz::expect_user_errors_only([&] {
    for (EinsumOrder order : {EinsumOrder::Auto, EinsumOrder::Greedy, EinsumOrder::LeftToRight}) {
      const EinsumOrderPlan plan = plan_einsum_order(inputs, output, sizes, order);
      if (plan.steps.size() != static_cast<size_t>(n - 1) || std::isnan(plan.flops)) std::abort();
      std::vector<bool> used(n + plan.steps.size(), false);
      for (size_t k = 0; k < plan.steps.size(); ++k) {
        const EinsumStep& s = plan.steps[k];
        if (s.a < 0 || s.b < 0 || s.a >= n + static_cast<int>(k) || s.b >= n + static_cast<int>(k) || s.a == s.b ||
            used[s.a] || used[s.b])
          std::abort();
        used[s.a] = used[s.b] = true;
      }
      if (plan.steps.back().result != output) std::abort();
    }
  });
}
