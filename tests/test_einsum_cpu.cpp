// The einsum planner + CPU kernels against the naive float64 reference.
#include <gtest/gtest.h>

#include "einsum_cases.h"
#include "host/einsum_reference.h"
#include "test_util.h"

using namespace handgrad;

namespace {
void check_case(const test::EinsumCase& c, uint64_t seed) {
  std::vector<Tensor> ts;
  for (size_t i = 0; i < c.shapes.size(); ++i) ts.push_back(test::random_tensor(c.shapes[i], seed + i));
  std::vector<const Tensor*> ps;
  for (Tensor& t : ts) ps.push_back(&t);
  const ReferenceResult ref = einsum_reference(c.equation, ps);
  Tensor out = einsum(c.equation, ps);
  ASSERT_EQ(out.shape(), ref.shape) << c.equation;
  EXPECT_LT(test::rel_err(out.to_vector(), ref.values), 1e-5) << c.equation;
}
}  // namespace

TEST(EinsumCpu, FixedCases) {
  uint64_t seed = 0;
  for (const test::EinsumCase& c : test::fixed_einsum_cases()) check_case(c, seed += 10);
}

TEST(EinsumCpu, RandomEquations) {
  for (uint64_t seed = 0; seed < 300; ++seed) check_case(test::random_einsum_case(seed), seed);
}

TEST(EinsumCpu, CourseEntryPoints) {
  Tensor a = test::random_tensor({3, 4, 5, 6}, 1), b = test::random_tensor({3, 4, 5, 6}, 2);
  Tensor w = test::random_tensor({7, 6}, 3);
  auto ref = [&](const char* eq, std::vector<const Tensor*> ps) { return einsum_reference(eq, ps).values; };
  EXPECT_LT(test::rel_err(einsum_mul_abcd(a, b).to_vector(), ref("abcd,abcd->abcd", {&a, &b})), 1e-6);
  EXPECT_LT(test::rel_err(einsum_contract_abcd_ed(a, w).to_vector(), ref("abcd,ed->abce", {&a, &w})), 1e-5);
  EXPECT_LT(test::rel_err(einsum_sum_abcd_abd(a).to_vector(), ref("abcd->abd", {&a})), 1e-5);
}
