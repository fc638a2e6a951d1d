// Q4: the AD engine's tables against the homework's numbers and finite differences.
#include <gtest/gtest.h>

#include <cmath>
#include <limits>

#include "kernels/error.h"
#include "models/autodiff.h"

using namespace handgrad;

namespace {
// Central differences of every output w.r.t. every input, in double.
std::vector<std::vector<double>> numeric_jacobian(const AdGraph& g, std::vector<double> p) {
  std::vector<std::vector<double>> J(g.n_outputs, std::vector<double>(g.n_inputs));
  for (int i = 0; i < g.n_inputs; ++i) {
    const double h = 1e-6 * std::max(1.0, std::fabs(p[i]));
    std::vector<double> a = p, b = p;
    a[i] += h;
    b[i] -= h;
    const AdResult ra = autodiff(g, a), rb = autodiff(g, b);
    for (int o = 0; o < g.n_outputs; ++o) J[o][i] = (ra.outputs[o] - rb.outputs[o]) / (2 * h);
  }
  return J;
}
}  // namespace

TEST(Autodiff, SquaredTablesAtTwoFourMatchTheHomework) {
  const AdGraph g = builtin_function("squared");
  const AdResult r = autodiff(g, {2, 4});
  ASSERT_EQ(r.tables.size(), 4u);
  // Forward, seed x1: values 2 4 6 -2 36 4 36 4; tangents 1 0 1 1 12 -4 12 -4.
  const std::vector<double> values = {2, 4, 6, -2, 36, 4, 36, 4};
  const std::vector<std::vector<double>> tangents = {{1, 0, 1, 1, 12, -4, 12, -4}, {0, 1, 1, -1, 12, 4, 12, 4}};
  for (int t = 0; t < 2; ++t) {
    ASSERT_EQ(r.tables[t].rows.size(), 8u);
    for (int k = 0; k < 8; ++k) {
      EXPECT_EQ(*r.tables[t].rows[k].value, values[k]);
      EXPECT_EQ(r.tables[t].rows[k].dvalue, tangents[t][k]) << "table " << t + 1 << " row " << k;
    }
  }
  // Reverse, seed y1 then y2 (rows: x̄1, x̄2, v1's two edges, v2's two edges, v̄1, v̄2, ȳ1, ȳ2).
  const std::vector<std::vector<double>> adjoints = {{12, 12, 12, 12, 0, 0, 12, 0, 1, 0},
                                                     {-4, 4, -4, 4, -4, 4, 0, -4, 0, 1}};
  const std::vector<std::vector<double>> terms = {{12, 12, 0, 0}, {0, 0, -4, 4}};
  for (int t = 0; t < 2; ++t) {
    const AdTable& tab = r.tables[2 + t];
    ASSERT_EQ(tab.rows.size(), 10u);
    for (int k = 0; k < 10; ++k) EXPECT_EQ(tab.rows[k].dvalue, adjoints[t][k]) << "table " << t + 3 << " row " << k;
    for (int k : {3, 5}) {  // the second edge row of a pair has no primal
      EXPECT_FALSE(tab.rows[k].primal.has_value());
      EXPECT_FALSE(tab.rows[k].value.has_value());
    }
    for (int k = 0; k < 4; ++k) EXPECT_EQ(*tab.rows[2 + k].contribution, terms[t][k]);
    EXPECT_FALSE(tab.rows[6].contribution.has_value());
  }
  EXPECT_EQ(r.jacobian_forward, (std::vector<std::vector<double>>{{12, 12}, {-4, 4}}));
  EXPECT_EQ(r.jacobian_reverse, r.jacobian_forward);
}

TEST(Autodiff, BothFormulationsSameJacobianOtherTrace) {
  const AdGraph sq = builtin_function("squared"), ex = builtin_function("expanded");
  for (std::vector<double> p : {std::vector<double>{2, 4}, {-1.3, 0.4}, {3.7, -2.2}}) {
    const AdResult a = autodiff(sq, p), b = autodiff(ex, p);
    EXPECT_GT(b.operations, a.operations);
    const auto num = numeric_jacobian(sq, p);
    for (int o = 0; o < 2; ++o)
      for (int i = 0; i < 2; ++i) {
        EXPECT_NEAR(a.jacobian_reverse[o][i], b.jacobian_reverse[o][i], 1e-12);
        EXPECT_NEAR(a.jacobian_forward[o][i], num[o][i], 1e-6);
        EXPECT_NEAR(b.jacobian_forward[o][i], b.jacobian_reverse[o][i], 1e-12);
      }
  }
}

TEST(Autodiff, ParsedExpressionsAgainstFiniteDifferences) {
  const AdGraph g = parse_functions("y1 = exp(x1) * sin(x2) / x1 - x3^3; y2 = log(x1 + x2)^2 - relu(x2) + cos(x3) * 2");
  ASSERT_EQ(g.n_inputs, 3);
  ASSERT_EQ(g.n_outputs, 2);
  for (std::vector<double> p : {std::vector<double>{1.5, 0.7, -0.3}, {0.4, 2.0, 1.1}}) {
    const AdResult r = autodiff(g, p);
    const auto num = numeric_jacobian(g, p);
    for (int o = 0; o < 2; ++o)
      for (int i = 0; i < 3; ++i) {
        EXPECT_NEAR(r.jacobian_forward[o][i], num[o][i], 1e-6 * std::max(1.0, std::fabs(num[o][i])));
        EXPECT_NEAR(r.jacobian_reverse[o][i], r.jacobian_forward[o][i], 1e-12);
      }
  }
}

TEST(Autodiff, ParserErrorsAreMessages) {
  for (const char* bad : {"", "y1 = ", "y2 = x1", "y1 = x1 +* 2", "y1 = (x1", "y1 = foo(x1)", "y1 = x1 ^ -2",
                          "y1 = x1 y2 = x2", "z = x1", "y1 = 3", "y1 = x99"})
    EXPECT_THROW(parse_functions(bad), UserError) << bad;
  EXPECT_THROW(builtin_function("cubed"), UserError);
  EXPECT_THROW(autodiff(builtin_function("squared"), {1, 2, 3}), UserError);
}

// Every forward-table cell: each node's tangent is the finite difference of that node's value
// (the table's own primal column) in the seeded input; every reverse table's x̄ rows are the
// finite differences of the seeded output.
TEST(Autodiff, EveryCellAgainstFiniteDifferences) {
  for (const char* fn : {"squared", "expanded"}) {
    const AdGraph g = builtin_function(fn);
    for (std::vector<double> p : {std::vector<double>{2, 4}, {0.3, -1.7}, {-2.5, 0.9}}) {
      const AdResult r = autodiff(g, p);
      for (int s = 0; s < g.n_inputs; ++s) {
        const double h = 1e-6;
        std::vector<double> a = p, b = p;
        a[s] += h;
        b[s] -= h;
        const AdResult ra = autodiff(g, a), rb = autodiff(g, b);
        const AdTable& t = r.tables[s];
        for (size_t k = 0; k < t.rows.size(); ++k) {
          const double fd = (*ra.tables[s].rows[k].value - *rb.tables[s].rows[k].value) / (2 * h);
          EXPECT_NEAR(t.rows[k].dvalue, fd, 1e-5 * std::max(1.0, std::fabs(fd))) << fn << " seed " << s << " row " << k;
        }
      }
      const auto num = numeric_jacobian(g, p);
      for (int o = 0; o < g.n_outputs; ++o)
        for (int i = 0; i < g.n_inputs; ++i)
          EXPECT_NEAR(r.tables[g.n_inputs + o].rows[i].dvalue, num[o][i], 1e-5 * std::max(1.0, std::fabs(num[o][i])));
    }
  }
}

// At poles each mode gives what PyTorch's gives (tests/python checks the same against torch):
// the constant numerator of 1/x has no tangent (forward mode gave 0 * inf = NaN), x^0's derivative
// is 0 at 0 (not 0 * 0^-1), ReLU passes nothing where it is off even under an infinite adjoint, and
// an output that does not use an input has a derivative of 0 for it, not 0 * inf.
TEST(Autodiff, PolesGiveWhatPyTorchGivesInEachMode) {
  const double inf = std::numeric_limits<double>::infinity();
  AdResult r = autodiff(parse_functions("y1 = 1 / x1"), {0.0});
  EXPECT_EQ(r.jacobian_forward[0][0], -inf);
  EXPECT_EQ(r.jacobian_reverse[0][0], -inf);
  r = autodiff(parse_functions("y1 = x1^0"), {0.0});
  EXPECT_EQ(r.jacobian_forward[0][0], 0.0);
  EXPECT_EQ(r.jacobian_reverse[0][0], 0.0);
  r = autodiff(parse_functions("y1 = log(relu(x1))"), {-1.0});
  EXPECT_EQ(r.jacobian_reverse[0][0], 0.0);           // threshold_backward: where(x > 0, inf, 0)
  EXPECT_TRUE(std::isnan(r.jacobian_forward[0][0]));  // log's tangent 0 / 0, as torch's forward AD
  r = autodiff(parse_functions("y1 = x1 * x2; y2 = 1 / x2"), {3.0, 0.0});
  EXPECT_EQ(r.jacobian_forward[1][0], 0.0);
  EXPECT_EQ(r.jacobian_reverse[1][0], 0.0);
  EXPECT_EQ(r.jacobian_forward[0][1], 3.0);
  EXPECT_EQ(r.jacobian_reverse[1][1], -inf);
}
