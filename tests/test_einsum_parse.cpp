#include <gtest/gtest.h>

#include "host/einsum.h"
#include "test_util.h"

using namespace handgrad;

TEST(EinsumParse, ExplicitImplicitEllipsisSpaces) {
  EinsumEquation e = parse_einsum("abcd,ed->abce");
  ASSERT_EQ(e.inputs.size(), 2u);
  EXPECT_TRUE(e.explicit_output);
  EXPECT_EQ(e.inputs[0].labels, (std::vector<int>{26, 27, 28, 29}));
  EXPECT_EQ(e.output.labels, (std::vector<int>{26, 27, 28, 30}));

  e = parse_einsum("ij, jk");
  EXPECT_FALSE(e.explicit_output);
  EXPECT_EQ(e.inputs.size(), 2u);

  e = parse_einsum("...ij,j...->...i");
  EXPECT_EQ(e.inputs[0].ellipsis_at, 0);
  EXPECT_EQ(e.inputs[1].ellipsis_at, 1);
  EXPECT_EQ(e.output.ellipsis_at, 0);

  e = parse_einsum("Ab -> bA");
  EXPECT_EQ(e.inputs[0].labels, (std::vector<int>{0, 27}));
}

TEST(EinsumParse, RejectsMalformedEquations) {
  for (const char* bad : {"ab1,b->a", "a..b->ab", "a....->a", "....", "ab->a->b", "ab-b",
                          "ab,bc->a,c", "ab->aa", "a.b", "a...b...->ab", "ab->a-",
                          ". ..", ".. .->", "a. ..,b->ab", "...b,b->. .."}) {
    EXPECT_THROW(parse_einsum(bad), UserError) << bad;
  }
}

namespace {
std::string error_of(const std::string& eq, const std::vector<Shape>& shapes) {
  std::vector<Tensor> ts;
  for (const Shape& s : shapes) ts.push_back(Tensor::zeros(s));
  std::vector<const Tensor*> ps;
  for (Tensor& t : ts) ps.push_back(&t);
  try {
    einsum(eq, ps);
  } catch (const UserError& e) {
    return e.what();
  }
  return "";
}
}  // namespace

TEST(EinsumParse, ShapeErrorsNameTheIndex) {
  EXPECT_NE(error_of("ij,jk->ik", {{2, 3}, {4, 5}}).find("subscript 'j'"), std::string::npos);
  EXPECT_NE(error_of("ii->i", {{2, 3}}).find("subscript 'i' is repeated"), std::string::npos);
  EXPECT_NE(error_of("ij->ik", {{2, 3}}).find("output subscript 'k'"), std::string::npos);
  EXPECT_NE(error_of("ijk->i", {{2, 3}}).find("number of subscripts"), std::string::npos);
  EXPECT_NE(error_of("ij,jk->ik", {{2, 3}}).find("fewer operands"), std::string::npos);
  EXPECT_NE(error_of("ij->ij", {{2, 3}, {3}}).find("more operands"), std::string::npos);
  EXPECT_NE(error_of("...ij,...ij->...ij", {{2, 3, 4}, {5, 3, 4}}).find("ellipsis"), std::string::npos);
  EXPECT_EQ(error_of("abcd,ed->abce", {{2, 3, 4, 5}, {6, 5}}), "");
}

TEST(EinsumParse, CourseEntryPointsCheckRank) {
  Tensor a = Tensor::zeros({2, 3, 4}), b = Tensor::zeros({2, 3, 4});
  EXPECT_THROW(einsum_mul_abcd(a, b), UserError);
  EXPECT_THROW(einsum_sum_abcd_abd(a), UserError);
  Tensor c = Tensor::zeros({2, 3, 4, 5}), d = Tensor::zeros({5, 6});
  EXPECT_THROW(einsum_contract_abcd_ed(c, d), UserError);  // d must be (e, d) = (*, 5)
}

TEST(EinsumPlan, CourseOpsLowerToOneKernelEach) {
  Tensor a = test::random_tensor({2, 3, 4, 5}, 1), b = test::random_tensor({2, 3, 4, 5}, 2);
  Tensor w = test::random_tensor({6, 5}, 3);
  EinsumPlanLog log;
  einsum("abcd,abcd->abcd", {&a, &b}, &log);
  ASSERT_EQ(log.steps.size(), 1u);
  EXPECT_NE(log.steps[0].find("mul, contiguous"), std::string::npos);
  log = {};
  einsum("abcd,ed->abce", {&a, &w}, &log);
  ASSERT_EQ(log.steps.size(), 1u) << log.steps[0];
  EXPECT_NE(log.steps[0].find("gemm batch=1 M=24 N=6 K=5 NT"), std::string::npos) << log.steps[0];
  log = {};
  einsum("abcd->abd", {&a}, &log);
  ASSERT_EQ(log.steps.size(), 1u);
  EXPECT_NE(log.steps[0].find("sum_middle"), std::string::npos);
}
