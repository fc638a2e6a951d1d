// The order in which einsum contracts its operands, pair by pair (einsum.h states the contract).
// Costs are opt_einsum's: contracting two operands costs the product of the sizes of all their
// labels, twice that when a label is summed away (a multiply and an add per term).
#include <algorithm>
#include <cmath>

#include "host/einsum.h"

namespace handgrad {

namespace {

// A set of label ids (letters 0..51, ellipsis dims from 52 on) as a bit set.
struct LabelSet {
  static constexpr int kBits = 128;
  uint64_t w[2] = {0, 0};
  void add(int l) { w[l >> 6] |= uint64_t(1) << (l & 63); }
  bool has(int l) const { return (w[l >> 6] >> (l & 63)) & 1; }
  bool empty() const { return (w[0] | w[1]) == 0; }
  LabelSet operator|(const LabelSet& o) const { return {{w[0] | o.w[0], w[1] | o.w[1]}}; }
  LabelSet operator&(const LabelSet& o) const { return {{w[0] & o.w[0], w[1] & o.w[1]}}; }
  LabelSet minus(const LabelSet& o) const { return {{w[0] & ~o.w[0], w[1] & ~o.w[1]}}; }
  bool operator==(const LabelSet& o) const { return w[0] == o.w[0] && w[1] == o.w[1]; }
};

struct Costs {
  std::vector<double> size;  // by label id; 1 for absent labels
  double of(const LabelSet& s) const {
    double p = 1;
    for (int l = 0; l < static_cast<int>(size.size()); ++l)
      if (s.has(l)) p *= size[l];
    return p;
  }
  // Contracting operands with labels a and b into `keep`.
  double flops(const LabelSet& a, const LabelSet& b, const LabelSet& keep) const {
    const LabelSet all = a | b;
    return of(all) * (all.minus(keep).empty() ? 1 : 2);
  }
};

std::vector<int> to_labels(const LabelSet& s) {
  std::vector<int> out;
  for (int l = 0; l < LabelSet::kBits; ++l)
    if (s.has(l)) out.push_back(l);
  return out;
}

// The labels of `mine` that something else still needs: the output or an operand in `others`.
LabelSet needed(const LabelSet& mine, const LabelSet& output, const LabelSet& others) { return mine & (output | others); }

struct Problem {
  std::vector<LabelSet> inputs;
  LabelSet output;
  Costs costs;
  int n() const { return static_cast<int>(inputs.size()); }
};

// Replays a sequence of pairs (ids: inputs, then results in creation order), filling in each
// step's result, FLOPs and size, and the totals.
EinsumOrderPlan replay(const Problem& p, const std::vector<std::pair<int, int>>& pairs, const std::string& method) {
  EinsumOrderPlan plan;
  plan.method = method;
  std::vector<LabelSet> live = p.inputs;  // by id
  std::vector<bool> used(p.n(), false);
  for (const auto& [a, b] : pairs) {
    used[a] = used[b] = true;
    LabelSet others;
    for (size_t id = 0; id < live.size(); ++id)
      if (!used[id]) others = others | live[id];
    const LabelSet keep = needed(live[a] | live[b], p.output, others);
    EinsumStep s;
    s.a = a, s.b = b;
    s.result = to_labels(keep);
    s.flops = p.costs.flops(live[a], live[b], keep);
    s.size = p.costs.of(keep);
    plan.flops += s.flops;
    plan.largest = std::max(plan.largest, s.size);
    plan.steps.push_back(s);
    live.push_back(keep);
    used.push_back(false);
  }
  return plan;
}

// Exact: dynamic programming over subsets of operands (opt_einsum's "dp" / "optimal" give the
// same minimum). best[S] is the cheapest way to contract the operands in bit set S into one,
// whose labels are those of S that the output or an operand outside S needs. Ties go to the
// split met first (the one holding the lowest operand with the fewest others), then to the
// smaller largest intermediate.
EinsumOrderPlan optimal(const Problem& p) {
  const int n = p.n();
  const uint32_t all = (uint32_t(1) << n) - 1;
  std::vector<LabelSet> labels(all + 1), keep(all + 1);
  for (uint32_t s = 1; s <= all; ++s) {
    const int low = __builtin_ctz(s);
    labels[s] = labels[s & (s - 1)] | p.inputs[low];
  }
  for (uint32_t s = 1; s <= all; ++s) keep[s] = needed(labels[s], p.output, labels[all & ~s]);
  std::vector<double> flops(all + 1, INFINITY), largest(all + 1, 0);
  std::vector<uint32_t> split(all + 1, 0);
  for (int i = 0; i < n; ++i) flops[uint32_t(1) << i] = 0;
  for (uint32_t s = 1; s <= all; ++s) {
    if ((s & (s - 1)) == 0) continue;
    const uint32_t low = s & (~s + 1);
    // Every split into a part holding the lowest operand and the non-empty rest.
    for (uint32_t a = (s - 1) & s; a > 0; a = (a - 1) & s) {
      if (!(a & low)) continue;
      const uint32_t b = s & ~a;
      const double f = flops[a] + flops[b] + p.costs.flops(keep[a], keep[b], keep[s]);
      const double big = std::max({largest[a], largest[b], p.costs.of(keep[s])});
      if (f < flops[s] || (f == flops[s] && big < largest[s])) flops[s] = f, largest[s] = big, split[s] = a;
    }
  }
  // Unfold the tree into steps, children before parents.
  std::vector<std::pair<int, int>> pairs;
  int next_id = n;
  const auto emit = [&](auto&& self, uint32_t s) -> int {
    if ((s & (s - 1)) == 0) return __builtin_ctz(s);
    const int a = self(self, split[s]), b = self(self, s & ~split[s]);
    pairs.emplace_back(a, b);
    return next_id++;
  };
  emit(emit, all);
  return replay(p, pairs, cat("optimal (dynamic programming over ", n, " operands)"));
}

// Many operands: repeatedly the cheapest pair (fewest FLOPs) among those whose result is no
// larger than the largest input or the output (when no pair fits, the pair with the smallest
// result). Ties go to the smaller result, then to the lowest pair of ids.
EinsumOrderPlan greedy(const Problem& p) {
  double limit = p.costs.of(p.output);
  for (const LabelSet& s : p.inputs) limit = std::max(limit, p.costs.of(s));
  std::vector<LabelSet> live = p.inputs;
  std::vector<int> alive;
  for (int i = 0; i < p.n(); ++i) alive.push_back(i);
  std::vector<std::pair<int, int>> pairs;
  while (alive.size() > 1) {
    int best_a = -1, best_b = -1;
    LabelSet best_keep;
    double best_f = INFINITY, best_size = INFINITY;
    bool best_fits = false;
    for (size_t i = 0; i < alive.size(); ++i)
      for (size_t j = i + 1; j < alive.size(); ++j) {
        LabelSet others;
        for (size_t k = 0; k < alive.size(); ++k)
          if (k != i && k != j) others = others | live[alive[k]];
        const LabelSet a = live[alive[i]], b = live[alive[j]];
        const LabelSet keep = needed(a | b, p.output, others);
        const double f = p.costs.flops(a, b, keep), size = p.costs.of(keep);
        const bool fits = size <= limit;
        const bool better = fits != best_fits ? fits
                            : fits        ? (f < best_f || (f == best_f && size < best_size))
                                          : size < best_size;
        if (better)
          best_a = alive[i], best_b = alive[j], best_keep = keep, best_f = f, best_size = size, best_fits = fits;
      }
    pairs.emplace_back(best_a, best_b);
    live.push_back(best_keep);
    alive.erase(std::remove_if(alive.begin(), alive.end(), [&](int id) { return id == best_a || id == best_b; }),
                alive.end());
    alive.push_back(static_cast<int>(live.size()) - 1);
  }
  return replay(p, pairs, cat("greedy over ", p.n(), " operands"));
}

}  // namespace

EinsumOrderPlan plan_einsum_order(const std::vector<std::vector<int>>& inputs, const std::vector<int>& output,
                                  const std::map<int, int64_t>& sizes, EinsumOrder order) {
  Problem p;
  p.costs.size.assign(LabelSet::kBits, 1.0);
  for (const auto& [l, s] : sizes) {
    HG_REQUIRE(l >= 0 && l < LabelSet::kBits, "einsum(): label id ", l, " out of range");
    p.costs.size[l] = static_cast<double>(s);
  }
  const auto set_of = [](const std::vector<int>& ls) {
    LabelSet s;
    for (int l : ls) {
      HG_REQUIRE(l >= 0 && l < LabelSet::kBits, "einsum(): label id ", l, " out of range");
      s.add(l);
    }
    return s;
  };
  for (const auto& in : inputs) p.inputs.push_back(set_of(in));
  p.output = set_of(output);
  // A label that one operand alone holds, and the output lacks, is summed before any pair
  // (einsum does that first, at no cost counted here).
  for (int i = 0; i < p.n(); ++i) {
    LabelSet others = p.output;
    for (int j = 0; j < p.n(); ++j)
      if (j != i) others = others | p.inputs[j];
    p.inputs[i] = p.inputs[i] & others;
  }
  if (p.n() < 2) return replay(p, {}, "nothing to contract");
  if (order == EinsumOrder::LeftToRight || p.n() == 2) {
    std::vector<std::pair<int, int>> pairs{{0, 1}};
    for (int i = 2; i < p.n(); ++i) pairs.emplace_back(p.n() + i - 2, i);
    return replay(p, pairs, order == EinsumOrder::LeftToRight ? "left to right (as torch.einsum without opt_einsum)"
                                                               : "one pair");
  }
  return p.n() <= kEinsumOptimalMaxOperands ? optimal(p) : greedy(p);
}

}  // namespace handgrad
