// The einsum contraction-order planner: its orders against brute force over every order, its FLOP
// counts by hand, its tie-breaking, and einsum's results in planned orders of many operands.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <set>

#include "einsum_cases.h"
#include "host/einsum.h"
#include "host/einsum_reference.h"
#include "kernels/philox.h"
#include "test_util.h"

using namespace handgrad;

namespace {

using LabelSet = std::set<int>;

// opt_einsum's cost of one pairwise contraction, written independently of the planner.
double pair_flops(const LabelSet& a, const LabelSet& b, const LabelSet& keep, const std::map<int, int64_t>& size) {
  LabelSet all = a;
  all.insert(b.begin(), b.end());
  double p = 1;
  bool summed = false;
  for (int l : all) {
    p *= static_cast<double>(size.at(l));
    summed = summed || !keep.count(l);
  }
  return summed ? 2 * p : p;
}

// The cheapest order by trying every sequence of pairs.
double brute_force(std::vector<LabelSet> live, const LabelSet& output, const std::map<int, int64_t>& size) {
  if (live.size() < 2) return 0;
  double best = INFINITY;
  for (size_t i = 0; i < live.size(); ++i)
    for (size_t j = i + 1; j < live.size(); ++j) {
      LabelSet keep;
      for (int l : live[i])
        if (output.count(l)) keep.insert(l);
      for (int l : live[j])
        if (output.count(l)) keep.insert(l);
      std::vector<LabelSet> rest;
      for (size_t k = 0; k < live.size(); ++k)
        if (k != i && k != j) rest.push_back(live[k]);
      for (const LabelSet& r : rest)
        for (int l : r)
          if (live[i].count(l) || live[j].count(l)) keep.insert(l);
      const double f = pair_flops(live[i], live[j], keep, size);
      rest.push_back(keep);
      best = std::min(best, f + brute_force(rest, output, size));
    }
  return best;
}

// What the planner is given after einsum's own first pass: labels that one operand alone holds
// and the output lacks are summed before any pair.
std::vector<std::vector<int>> presummed(const std::vector<std::vector<int>>& inputs, const std::vector<int>& output) {
  std::vector<std::vector<int>> out;
  for (size_t i = 0; i < inputs.size(); ++i) {
    std::vector<int> keep;
    for (int l : inputs[i]) {
      bool needed = std::count(output.begin(), output.end(), l) > 0;
      for (size_t j = 0; j < inputs.size() && !needed; ++j)
        needed = j != i && std::count(inputs[j].begin(), inputs[j].end(), l) > 0;
      if (needed) keep.push_back(l);
    }
    out.push_back(keep);
  }
  return out;
}

// Checks that a plan is a valid contraction (each operand consumed once, the result holds the
// output's labels) and that its stated costs are what its steps cost.
void check_plan(const EinsumOrderPlan& plan, const std::vector<std::vector<int>>& inputs, const std::vector<int>& output,
                const std::map<int, int64_t>& size) {
  std::vector<LabelSet> live;
  for (const auto& in : presummed(inputs, output)) live.emplace_back(in.begin(), in.end());
  std::vector<bool> used(inputs.size(), false);
  double flops = 0;
  ASSERT_EQ(plan.steps.size(), inputs.size() - 1);
  for (const EinsumStep& s : plan.steps) {
    ASSERT_TRUE(s.a >= 0 && s.b >= 0 && s.a < static_cast<int>(live.size()) && s.b < static_cast<int>(live.size()));
    ASSERT_FALSE(used[s.a] || used[s.b]) << "an operand contracted twice";
    used[s.a] = used[s.b] = true;
    const LabelSet keep(s.result.begin(), s.result.end());
    EXPECT_DOUBLE_EQ(s.flops, pair_flops(live[s.a], live[s.b], keep, size));
    flops += s.flops;
    live.push_back(keep);
    used.push_back(false);
  }
  EXPECT_DOUBLE_EQ(plan.flops, flops);
  EXPECT_EQ(live.back(), LabelSet(output.begin(), output.end()));
}

// A random problem: n operands over up to 8 labels of sizes 1..9, each operand 1..4 labels.
void random_problem(uint64_t seed, int n, std::vector<std::vector<int>>* inputs, std::vector<int>* output,
                    std::map<int, int64_t>* size) {
  const Philox rng(seed, 77);
  uint64_t draw = 0;
  const int labels = 2 + static_cast<int>(rng.uniform_int(draw++, 7));
  for (int l = 0; l < labels; ++l) (*size)[l] = 1 + static_cast<int64_t>(rng.uniform_int(draw++, 9));
  std::map<int, int> count;
  for (int i = 0; i < n; ++i) {
    std::set<int> in;
    const int k = 1 + static_cast<int>(rng.uniform_int(draw++, 4));
    for (int j = 0; j < k; ++j) in.insert(static_cast<int>(rng.uniform_int(draw++, labels)));
    inputs->emplace_back(in.begin(), in.end());
    for (int l : in) ++count[l];
  }
  for (auto [l, c] : count)  // labels of one operand go to the output or are summed, at random
    if (c == 1 && rng.uniform_int(draw++, 2)) output->push_back(l);
}

}  // namespace

TEST(EinsumOrder, OptimalEqualsBruteForceOnRandomProblems) {
  for (uint64_t seed = 0; seed < 300; ++seed) {
    const int n = 2 + static_cast<int>(seed % 4);  // 2..5 operands
    std::vector<std::vector<int>> inputs;
    std::vector<int> output;
    std::map<int, int64_t> size;
    random_problem(seed, n, &inputs, &output, &size);
    const EinsumOrderPlan plan = plan_einsum_order(inputs, output, size, EinsumOrder::Auto);
    check_plan(plan, inputs, output, size);
    std::vector<LabelSet> sets;
    for (const auto& in : presummed(inputs, output)) sets.emplace_back(in.begin(), in.end());
    EXPECT_DOUBLE_EQ(plan.flops, brute_force(sets, LabelSet(output.begin(), output.end()), size)) << "seed " << seed;
    // Never worse than left to right, which is one of the orders searched.
    const EinsumOrderPlan l2r = plan_einsum_order(inputs, output, size, EinsumOrder::LeftToRight);
    check_plan(l2r, inputs, output, size);
    EXPECT_LE(plan.flops, l2r.flops);
  }
}

TEST(EinsumOrder, GreedyIsValidAndNoWorseThanLeftToRightOnChains) {
  // 11..14 operands: past the exact search.
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const int n = kEinsumOptimalMaxOperands + 1 + static_cast<int>(seed % 4);
    std::vector<std::vector<int>> inputs;
    std::vector<int> output;
    std::map<int, int64_t> size;
    random_problem(seed + 1000, n, &inputs, &output, &size);
    const EinsumOrderPlan plan = plan_einsum_order(inputs, output, size, EinsumOrder::Auto);
    EXPECT_NE(plan.method.find("greedy"), std::string::npos);
    check_plan(plan, inputs, output, size);
  }
  // A matrix chain A0 A1 ... A11 with alternating sizes 64 and 2: greedy contracts through the
  // small dims and beats left to right by orders of magnitude.
  std::vector<std::vector<int>> chain;
  std::map<int, int64_t> size;
  for (int i = 0; i < 12; ++i) chain.push_back({i, i + 1});
  for (int l = 0; l <= 12; ++l) size[l] = l % 2 ? 2 : 64;
  const EinsumOrderPlan g = plan_einsum_order(chain, {0, 12}, size, EinsumOrder::Auto);
  const EinsumOrderPlan l2r = plan_einsum_order(chain, {0, 12}, size, EinsumOrder::LeftToRight);
  check_plan(g, chain, {0, 12}, size);
  EXPECT_LT(g.flops, l2r.flops);
}

TEST(EinsumOrder, FlopCountsByHand) {
  // ab,cd,bc->ad, every size 256. Left to right: the outer product ab x cd (256^4 products, no
  // sum: b and c are still needed), then abcd x bc -> ad (2 x 256^4). Optimal: ab x bc -> ac,
  // then ac x cd -> ad, 2 x 256^3 each.
  const std::map<int, int64_t> size{{0, 256}, {1, 256}, {2, 256}, {3, 256}};
  const std::vector<std::vector<int>> in{{0, 1}, {2, 3}, {1, 2}};
  const EinsumOrderPlan l2r = plan_einsum_order(in, {0, 3}, size, EinsumOrder::LeftToRight);
  EXPECT_DOUBLE_EQ(l2r.steps[0].flops, std::pow(256.0, 4));
  EXPECT_DOUBLE_EQ(l2r.steps[1].flops, 2 * std::pow(256.0, 4));
  EXPECT_DOUBLE_EQ(l2r.largest, std::pow(256.0, 4));
  const EinsumOrderPlan best = plan_einsum_order(in, {0, 3}, size, EinsumOrder::Auto);
  EXPECT_DOUBLE_EQ(best.flops, 4 * std::pow(256.0, 3));
  EXPECT_DOUBLE_EQ(best.largest, 256.0 * 256);
  ASSERT_EQ(best.steps.size(), 2u);
  EXPECT_EQ(std::set<int>({best.steps[0].a, best.steps[0].b}), std::set<int>({0, 2}));
  // A pure product (nothing summed) counts one FLOP per term.
  EXPECT_DOUBLE_EQ(plan_einsum_order({{0}, {1}}, {0, 1}, size, EinsumOrder::Auto).flops, 256.0 * 256);
}

TEST(EinsumOrder, TiesAreBrokenTheSameWayEveryTime) {
  // ab,bc,cd->ad with equal sizes: (ab bc) cd and ab (bc cd) both cost 2 x 4^3 twice. The first
  // split found wins: operands 0 and 1 first.
  const std::map<int, int64_t> size{{0, 4}, {1, 4}, {2, 4}, {3, 4}};
  const std::vector<std::vector<int>> in{{0, 1}, {1, 2}, {2, 3}};
  const EinsumOrderPlan p = plan_einsum_order(in, {0, 3}, size, EinsumOrder::Auto);
  ASSERT_EQ(p.steps.size(), 2u);
  EXPECT_EQ(p.steps[0].a, 0);
  EXPECT_EQ(p.steps[0].b, 1);
  EXPECT_DOUBLE_EQ(p.flops, 256);
  for (int i = 0; i < 5; ++i) {
    const EinsumOrderPlan q = plan_einsum_order(in, {0, 3}, size, EinsumOrder::Auto);
    ASSERT_EQ(q.steps.size(), p.steps.size());
    for (size_t k = 0; k < q.steps.size(); ++k) EXPECT_EQ(q.steps[k].a * 100 + q.steps[k].b, p.steps[k].a * 100 + p.steps[k].b);
  }
}

TEST(EinsumOrder, ManyOperandsAgreeWithTheReference) {
  // 4..12 operands over small sizes, in the planned order (exact and greedy) and left to right.
  for (uint64_t seed = 0; seed < 60; ++seed) {
    const Philox rng(seed, 91);
    uint64_t draw = 0;
    const int n = 4 + static_cast<int>(seed % 9);
    const int labels = 3 + static_cast<int>(rng.uniform_int(draw++, 6));
    std::vector<int64_t> size(labels);
    for (int64_t& s : size) s = 1 + static_cast<int64_t>(rng.uniform_int(draw++, 3));
    std::string eq;
    std::vector<Tensor> ts;
    for (int i = 0; i < n; ++i) {
      std::set<int> in;
      const int k = 1 + static_cast<int>(rng.uniform_int(draw++, 3));
      for (int j = 0; j < k; ++j) in.insert(static_cast<int>(rng.uniform_int(draw++, labels)));
      Shape shape;
      if (i) eq += ",";
      for (int l : in) eq += char('a' + l), shape.push_back(size[l]);
      ts.push_back(test::random_tensor(shape, seed * 100 + i));
    }
    std::vector<const Tensor*> ps;
    for (Tensor& t : ts) ps.push_back(&t);
    const ReferenceResult ref = einsum_reference(eq, ps);
    // The scale of the rounding error: the same sums over the terms' magnitudes (a sum that
    // cancels, e.g. a scalar result of 9 operands, is small next to its terms in any order).
    std::vector<Tensor> abs_ts;
    std::vector<const Tensor*> abs_ps;
    for (const Tensor& t : ts) {
      abs_ts.push_back(t.clone());
      for (int64_t i = 0; i < t.numel(); ++i) abs_ts.back().data<float>()[i] = std::fabs(t.data<float>()[i]);
    }
    for (Tensor& t : abs_ts) abs_ps.push_back(&t);
    const std::vector<double> scale = einsum_reference(eq, abs_ps).values;
    const double max_scale = *std::max_element(scale.begin(), scale.end());
    for (EinsumOrder order : {EinsumOrder::Auto, EinsumOrder::Greedy, EinsumOrder::LeftToRight}) {
      EinsumPlanLog log;
      Tensor out = einsum(eq, ps, &log, order);
      ASSERT_EQ(out.shape(), ref.shape) << eq;
      const std::vector<float> got = out.to_vector();
      double err = 0;
      for (size_t i = 0; i < got.size(); ++i) err = std::max(err, std::fabs(got[i] - ref.values[i]));
      EXPECT_LT(err, 1e-5 * max_scale) << eq;
      EXPECT_EQ(log.order.size(), static_cast<size_t>(n)) << eq;  // n - 1 steps and the summary
    }
  }
}

TEST(EinsumOrder, MoreThanEightDims) {
  uint64_t seed = 500;
  for (const test::EinsumCase& c : test::many_dims_einsum_cases()) {
    std::vector<Tensor> ts;
    for (const Shape& shape : c.shapes) ts.push_back(test::random_tensor(shape, ++seed));
    std::vector<const Tensor*> ps;
    for (Tensor& t : ts) ps.push_back(&t);
    const ReferenceResult ref = einsum_reference(c.equation, ps);
    for (EinsumOrder order : {EinsumOrder::Auto, EinsumOrder::LeftToRight}) {
      Tensor out = einsum(c.equation, ps, nullptr, order);
      ASSERT_EQ(out.shape(), ref.shape) << c.equation;
      EXPECT_LT(test::rel_err(out.to_vector(), ref.values), 1e-5) << c.equation;
    }
  }
}

// opt_einsum's greedy never joins two operands without a label in common while two live operands
// share one (the old cheapest-pair greedy started with outer products of small unrelated
// operands, whose labels then rode through every later step), and every plan is valid.
TEST(EinsumOrder, GreedyJoinsSharingOperandsFirst) {
  for (uint64_t seed = 0; seed < 200; ++seed) {
    const int n = 3 + static_cast<int>(seed % 30);
    std::vector<std::vector<int>> inputs;
    std::vector<int> output;
    std::map<int, int64_t> size;
    random_problem(seed + 7000, n, &inputs, &output, &size);
    const EinsumOrderPlan plan = plan_einsum_order(inputs, output, size, EinsumOrder::Greedy);
    check_plan(plan, inputs, output, size);
    std::vector<LabelSet> live;
    for (const auto& in : presummed(inputs, output)) live.emplace_back(in.begin(), in.end());
    std::vector<bool> used(live.size(), false);
    const auto share = [](const LabelSet& a, const LabelSet& b) {
      return std::any_of(a.begin(), a.end(), [&](int l) { return b.count(l) > 0; });
    };
    for (const EinsumStep& s : plan.steps) {
      if (!share(live[s.a], live[s.b])) {
        for (size_t i = 0; i < live.size(); ++i)
          for (size_t j = i + 1; j < live.size(); ++j) {
            ASSERT_FALSE(!used[i] && !used[j] && share(live[i], live[j]))
                << "seed " << seed << ": an outer product while operands " << i << " and " << j << " share a label";
          }
      }
      used[s.a] = used[s.b] = true;
      live.emplace_back(s.result.begin(), s.result.end());
      used.push_back(false);
    }
  }
}

// Beyond the exact search, Auto keeps the cheaper greedy order: never worse than opt_einsum's
// rule alone. And a hard case written down by hand: a chain a0..a12 (every size 2 but the chain
// ends) hung with 12 small vectors of labels no one else holds, for which a cheapest-pair greedy
// multiplies the vectors together first; opt_einsum's rule contracts the chain, then multiplies
// the vectors in last (12 outer products of at most 2^12 terms: under 4 * 2^13 in all).
TEST(EinsumOrder, GreedyOrdersBeyondTheExactSearch) {
  for (uint64_t seed = 0; seed < 60; ++seed) {
    const int n = kEinsumOptimalMaxOperands + 1 + static_cast<int>(seed % 20);
    std::vector<std::vector<int>> inputs;
    std::vector<int> output;
    std::map<int, int64_t> size;
    random_problem(seed + 9000, n, &inputs, &output, &size);
    const EinsumOrderPlan best = plan_einsum_order(inputs, output, size, EinsumOrder::Auto);
    const EinsumOrderPlan memory = plan_einsum_order(inputs, output, size, EinsumOrder::Greedy);
    check_plan(best, inputs, output, size);
    EXPECT_LE(best.exact_flops, memory.exact_flops) << "seed " << seed;
  }
  std::vector<std::vector<int>> inputs;
  std::map<int, int64_t> size;
  std::vector<int> output = {0, 12};
  for (int i = 0; i < 12; ++i) inputs.push_back({i, i + 1});  // the chain: labels 0..12
  for (int i = 0; i < 12; ++i) inputs.push_back({20 + i});    // the vectors: labels 20..31, in the output
  for (int l = 0; l <= 12; ++l) size[l] = 2;
  for (int l = 20; l < 32; ++l) size[l] = 2, output.push_back(l);
  const EinsumOrderPlan plan = plan_einsum_order(inputs, output, size, EinsumOrder::Auto);
  check_plan(plan, inputs, output, size);
  // The chain: 11 contractions of 2x2 by 2x2 (2 * 8 FLOPs each); then 12 outer products onto a
  // result that doubles each time, from 4 x 2 terms to 2^14.
  double bound = 11 * 16;
  for (int k = 1; k <= 12; ++k) bound += std::pow(2.0, 2 + k);
  EXPECT_LE(plan.flops, bound) << plan.method;
}

// Sizes of 0 and sizes whose products leave a double's range: costs stay finite (no inf, no NaN),
// ties are broken, and every order completes - the exact search and both greedy orders (three
// and eleven empty operands over labels of 2^40). einsum() itself gives torch's answer: zeros.
TEST(EinsumOrder, EmptyAndHugeSizesPlanAndRun) {
  for (int n : {3, 11, 40}) {
    std::vector<std::vector<int>> inputs;
    std::map<int, int64_t> size{{0, 0}};
    for (int i = 0; i < n; ++i) {
      inputs.push_back({0, 1 + i, 1 + (i + 1) % n});
      size[1 + i] = int64_t(1) << 40;
    }
    for (EinsumOrder order : {EinsumOrder::Auto, EinsumOrder::Greedy, EinsumOrder::LeftToRight}) {
      const EinsumOrderPlan plan = plan_einsum_order(inputs, {}, size, order);
      ASSERT_EQ(plan.steps.size(), static_cast<size_t>(n - 1)) << n;
      EXPECT_FALSE(std::isnan(plan.flops)) << n;
    }
    std::map<int, int64_t> huge;  // every size 2^40: products up to 2^(40 * 40), past a double
    for (int l = 0; l <= n; ++l) huge[l] = int64_t(1) << 40;
    const EinsumOrderPlan big = plan_einsum_order(inputs, {}, huge, EinsumOrder::Auto);
    ASSERT_EQ(big.steps.size(), static_cast<size_t>(n - 1)) << n;
    EXPECT_TRUE(std::isfinite(static_cast<double>(std::log2(big.exact_flops)))) << n;
  }
  // The reproducers' shapes: operands of shape (0, 2^40 x k) hold no element. Three of 4 labels
  // each, and a chain of 16 (past the exact search) whose GEMMs would multiply 2^40 by 2^40.
  for (const auto& [n, step] : {std::pair{3, 4}, std::pair{16, 3}}) {
    std::vector<Tensor> ts;
    std::string eq;
    const std::string letters = "ABCDEFGHIJKLMNOPQRSTUVWXYabcdefghijklmnopqrstuvwxy";
    for (int i = 0; i < n; ++i) {
      Shape shape{0};
      if (i) eq += ",";
      eq += 'z';
      for (int k = 0; k < 4; ++k) shape.push_back(int64_t(1) << 40), eq += letters[(step * i + k) % 50];
      ts.push_back(Tensor::zeros(shape));
    }
    eq += "->";
    std::vector<const Tensor*> ps;
    for (Tensor& t : ts) ps.push_back(&t);
    for (EinsumOrder order : {EinsumOrder::Auto, EinsumOrder::Greedy, EinsumOrder::LeftToRight}) {
      Tensor out = einsum(eq, ps, nullptr, order);
      EXPECT_EQ(out.numel(), 1) << eq;
      EXPECT_EQ(out.to_vector(), std::vector<float>{0.f}) << eq;
    }
  }
}

// Planning is fast: a,a,...,a->a at 1000 operands (the old greedy's O(n^4) took minutes at 960)
// and a random problem of 52 operands over 52 labels finish well inside a second here; the
// times themselves are the benchmark's (bench_einsum BM_plan_order).
TEST(EinsumOrder, ManyOperandsPlanQuickly) {
  std::vector<std::vector<int>> same(1000, std::vector<int>{0});
  const EinsumOrderPlan plan = plan_einsum_order(same, {0}, {{0, 5}}, EinsumOrder::Auto);
  EXPECT_EQ(plan.steps.size(), 999u);
  EXPECT_DOUBLE_EQ(plan.flops, 999 * 5.0);
}
