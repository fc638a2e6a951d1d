// The order in which einsum contracts its operands, pair by pair (einsum.h states the contract).
// Costs are opt_einsum's: contracting two operands costs the product of the sizes of all their
// labels, twice that when a label is summed away (a multiply and an add per term). They are
// long doubles: 128 labels of up to 2^63 each stay finite (x86's and aarch64's long double reach
// 2^16383), so no cost overflows to inf and none turns NaN (inf x a size of 0); a size of 0 makes
// a cost 0, and equal costs go to the tie rules.
#include <algorithm>
#include <array>
#include <cmath>
#include <map>
#include <queue>
#include <set>
#include <tuple>

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

using Cost = long double;

struct Costs {
  std::vector<Cost> size;  // by label id; 1 for absent labels
  Cost of(const LabelSet& s) const {
    Cost p = 1;
    for (int w = 0; w < 2; ++w)
      for (uint64_t m = s.w[w]; m; m &= m - 1) p *= size[w * 64 + __builtin_ctzll(m)];
    return p;
  }
  // Contracting operands with labels a and b into `keep`.
  Cost flops(const LabelSet& a, const LabelSet& b, const LabelSet& keep) const {
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

// How many live operands hold each label, and which labels two or three of them hold.
struct LabelCounts {
  std::array<int, LabelSet::kBits> holders{};
  LabelSet two, three;  // held by >= 2, >= 3 live operands
  void add(const LabelSet& s, int delta) {
    for (int l : to_labels(s)) {
      holders[l] += delta;
      LabelSet bit;
      bit.add(l);
      two = holders[l] >= 2 ? two | bit : two.minus(bit);
      three = holders[l] >= 3 ? three | bit : three.minus(bit);
    }
  }
  LabelSet keep(const LabelSet& a, const LabelSet& b, const LabelSet& output) const {
    const LabelSet either = a | b, both = a & b, one = either.minus(both);
    return (either & output) | (both & three) | (one & two);
  }
};

// Replays a sequence of pairs (ids: inputs, then results in creation order), filling in each
// step's result, FLOPs and size, and the totals.
EinsumOrderPlan replay(const Problem& p, const std::vector<std::pair<int, int>>& pairs, const std::string& method) {
  EinsumOrderPlan plan;
  plan.method = method;
  Cost flops = 0, largest = 0;
  std::vector<LabelSet> live = p.inputs;  // by id
  LabelCounts counts;  // O(labels) a step to know what the others hold, not O(n)
  for (const LabelSet& in : p.inputs) counts.add(in, 1);
  for (const auto& [a, b] : pairs) {
    const LabelSet keep = counts.keep(live[a], live[b], p.output);
    counts.add(live[a], -1), counts.add(live[b], -1), counts.add(keep, 1);
    EinsumStep s;
    s.a = a, s.b = b;
    s.result = to_labels(keep);
    const Cost f = p.costs.flops(live[a], live[b], keep), size = p.costs.of(keep);
    s.flops = static_cast<double>(f);  // (inf past a double's range: shown, never compared)
    s.size = static_cast<double>(size);
    flops += f;
    largest = std::max(largest, size);
    plan.steps.push_back(s);
    live.push_back(keep);
  }
  plan.exact_flops = flops;
  plan.flops = static_cast<double>(flops);
  plan.largest = static_cast<double>(largest);
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
  std::vector<Cost> flops(all + 1, 0), largest(all + 1, 0);
  std::vector<uint32_t> split(all + 1, 0);
  for (int i = 0; i < n; ++i) flops[uint32_t(1) << i] = 0;
  for (uint32_t s = 1; s <= all; ++s) {
    if ((s & (s - 1)) == 0) continue;
    const uint32_t low = s & (~s + 1);
    // Every split into a part holding the lowest operand and the non-empty rest.
    for (uint32_t a = (s - 1) & s; a > 0; a = (a - 1) & s) {
      if (!(a & low)) continue;
      const uint32_t b = s & ~a;
      const Cost f = flops[a] + flops[b] + p.costs.flops(keep[a], keep[b], keep[s]);
      const Cost big = std::max({largest[a], largest[b], p.costs.of(keep[s])});
      if (split[s] == 0 || f < flops[s] || (f == flops[s] && big < largest[s]))
        flops[s] = f, largest[s] = big, split[s] = a;
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

// Which labels a pair's result keeps, from label counts: a label both hold stays when a third
// live operand (or the output) holds it, a label one holds when a second does. The counts are
// updated per contraction, so a candidate costs a few bit operations, not a union over the rest.

// Many operands, by FLOPs: repeatedly the cheapest pair (fewest FLOPs) among those whose result
// is no larger than the largest input or the output (when no pair fits, the pair with the
// smallest result). Ties go to the smaller result, then to the lowest pair of ids. O(n^2) a step.
EinsumOrderPlan greedy_flops(const Problem& p) {
  Cost limit = p.costs.of(p.output);
  for (const LabelSet& s : p.inputs) limit = std::max(limit, p.costs.of(s));
  LabelCounts counts;
  for (const LabelSet& s : p.inputs) counts.add(s, 1);
  std::vector<LabelSet> live = p.inputs;
  std::vector<int> alive;
  for (int i = 0; i < p.n(); ++i) alive.push_back(i);
  std::vector<std::pair<int, int>> pairs;
  while (alive.size() > 1) {
    int best_a = -1, best_b = -1;
    LabelSet best_keep;
    Cost best_f = 0, best_size = 0;
    bool best_fits = false;
    for (size_t i = 0; i < alive.size(); ++i)
      for (size_t j = i + 1; j < alive.size(); ++j) {
        const LabelSet a = live[alive[i]], b = live[alive[j]];
        const LabelSet keep = counts.keep(a, b, p.output);
        const Cost f = p.costs.flops(a, b, keep), size = p.costs.of(keep);
        const bool fits = size <= limit;
        const bool better = best_a < 0 || (fits != best_fits ? fits
                                           : fits        ? (f < best_f || (f == best_f && size < best_size))
                                                         : size < best_size);
        if (better)
          best_a = alive[i], best_b = alive[j], best_keep = keep, best_f = f, best_size = size, best_fits = fits;
      }
    pairs.emplace_back(best_a, best_b);
    counts.add(live[best_a], -1), counts.add(live[best_b], -1), counts.add(best_keep, 1);
    live.push_back(best_keep);
    alive.erase(std::remove_if(alive.begin(), alive.end(), [&](int id) { return id == best_a || id == best_b; }),
                alive.end());
    alive.push_back(static_cast<int>(live.size()) - 1);
  }
  return replay(p, pairs, "greedy by FLOPs");
}

// Many operands, by memory: opt_einsum's greedy rule, for these label sets. Labels that every
// input holds can only go at the last step, so they count as output labels.
//  1. Operands with the same labels are multiplied first (Hadamard products).
//  2. Among pairs that share a label, the contraction that frees the most memory (the result's
//     size minus both inputs'), ties to the pair whose younger operand is older, then whose
//     older one is. A new operand offers one candidate, its best partner at that time; a
//     candidate naming a label set no longer live is dropped.
//  3. What is left shares no label: outer products, the two smallest first.
EinsumOrderPlan greedy_memory(const Problem& p) {
  LabelSet output = p.output, common = p.inputs[0];
  for (const LabelSet& s : p.inputs) common = common & s;
  output = output | common;
  using Key = std::pair<uint64_t, uint64_t>;  // a label set
  const auto key = [](const LabelSet& s) { return Key{s.w[0], s.w[1]}; };
  const auto set_of = [](const Key& k) { return LabelSet{{k.first, k.second}}; };
  std::map<Key, int> live;  // label set -> the id of the live operand that has it
  std::vector<std::pair<int, int>> pairs;
  int next_id = p.n();
  const auto pair_up = [&](int a, int b) {
    pairs.emplace_back(std::min(a, b), std::max(a, b));
    return next_id++;
  };
  for (int i = 0; i < p.n(); ++i) {  // 1.
    const auto it = live.find(key(p.inputs[i]));
    if (it == live.end()) live[key(p.inputs[i])] = i;
    else it->second = pair_up(it->second, i);
  }
  std::array<std::set<Key>, LabelSet::kBits> holders;  // live label sets holding each non-output label
  LabelCounts counts;
  for (const auto& [k, id] : live) {
    counts.add(set_of(k).minus(output), 1);
    for (int l : to_labels(set_of(k).minus(output))) holders[l].insert(k);
  }
  // 2. Candidates: (memory freed, younger id, older id, the pair, its result), the least first.
  using Candidate = std::tuple<Cost, int, int, Key, Key, LabelSet>;
  const auto cmp = [](const Candidate& x, const Candidate& y) {
    return std::tie(std::get<0>(x), std::get<1>(x), std::get<2>(x)) >
           std::tie(std::get<0>(y), std::get<1>(y), std::get<2>(y));
  };
  std::priority_queue<Candidate, std::vector<Candidate>, decltype(cmp)> queue(cmp);
  const auto candidate = [&](const Key& k1, const Key& k2) {
    const LabelSet a = set_of(k1), b = set_of(k2), keep = counts.keep(a, b, output);
    const Cost freed = p.costs.of(keep) - p.costs.of(a) - p.costs.of(b);
    const int i1 = live.at(k1), i2 = live.at(k2);
    return Candidate{freed, std::max(i1, i2), std::min(i1, i2), k1, k2, keep};
  };
  // The best candidate of k1 against any of `partners` (none when empty).
  const auto offer = [&](const Key& k1, const std::vector<Key>& partners) {
    if (partners.empty()) return;
    Candidate best = candidate(k1, partners[0]);
    for (size_t i = 1; i < partners.size(); ++i) best = std::min(best, candidate(k1, partners[i]), [&](auto& x, auto& y) {
      return cmp(y, x);
    });
    queue.push(best);
  };
  for (int l = 0; l < LabelSet::kBits; ++l) {
    std::vector<Key> ks(holders[l].begin(), holders[l].end());
    std::sort(ks.begin(), ks.end(), [&](const Key& x, const Key& y) { return live.at(x) < live.at(y); });
    for (size_t i = 0; i + 1 < ks.size(); ++i) offer(ks[i], std::vector<Key>(ks.begin() + i + 1, ks.end()));
  }
  while (!queue.empty()) {
    const auto [freed, younger, older, k1, k2, keep] = queue.top();
    queue.pop();
    if (!live.count(k1) || !live.count(k2)) continue;  // obsolete
    const int id1 = live.at(k1), id2 = live.at(k2);
    live.erase(k1), live.erase(k2);
    for (const Key& k : {k1, k2})
      for (int l : to_labels(set_of(k).minus(output))) holders[l].erase(k);
    counts.add(set_of(k1).minus(output), -1), counts.add(set_of(k2).minus(output), -1);
    int id = pair_up(id1, id2);
    const Key k12 = key(keep);
    const auto same = live.find(k12);
    if (same != live.end()) {  // a live operand with the same labels: their Hadamard product
      id = pair_up(same->second, id);
      same->second = id;
    } else {
      live[k12] = id;
      counts.add(keep.minus(output), 1);
      for (int l : to_labels(keep.minus(output))) holders[l].insert(k12);
    }
    std::set<Key> partners;
    for (int l : to_labels(keep.minus(output))) partners.insert(holders[l].begin(), holders[l].end());
    partners.erase(k12);
    offer(k12, std::vector<Key>(partners.begin(), partners.end()));
  }
  // 3. Outer products, by size (of the labels the output keeps), then id.
  using Rest = std::tuple<Cost, int, Key>;
  std::priority_queue<Rest, std::vector<Rest>, std::greater<Rest>> rest;
  for (const auto& [k, id] : live) rest.emplace(p.costs.of(set_of(k) & output), id, k);
  auto [size1, id1, k1] = rest.top();
  rest.pop();
  while (!rest.empty()) {
    const auto [size2, id2, k2] = rest.top();
    rest.pop();
    const LabelSet k12 = (set_of(k1) | set_of(k2)) & output;
    rest.emplace(p.costs.of(k12), pair_up(id1, id2), key(k12));
    std::tie(size1, id1, k1) = rest.top();
    rest.pop();
  }
  (void)size1;
  return replay(p, pairs, "greedy by memory freed (opt_einsum's rule)");
}

}  // namespace

EinsumOrderPlan plan_einsum_order(const std::vector<std::vector<int>>& inputs, const std::vector<int>& output,
                                  const std::map<int, int64_t>& sizes, EinsumOrder order) {
  Problem p;
  p.costs.size.assign(LabelSet::kBits, 1.0);
  for (const auto& [l, s] : sizes) {
    HG_REQUIRE(l >= 0 && l < LabelSet::kBits, "einsum(): label id ", l, " out of range");
    p.costs.size[l] = static_cast<Cost>(s);
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
  // (The labels of the others: the union of those before i and of those after, O(n) in all.)
  std::vector<LabelSet> after(p.n() + 1, p.output);
  for (int i = p.n() - 1; i >= 0; --i) after[i] = after[i + 1] | p.inputs[i];
  LabelSet before = p.output;
  for (int i = 0; i < p.n(); ++i) {
    const LabelSet mine = p.inputs[i];
    p.inputs[i] = mine & (before | after[i + 1]);
    before = before | mine;
  }
  if (p.n() < 2) return replay(p, {}, "nothing to contract");
  if (order == EinsumOrder::LeftToRight || p.n() == 2) {
    std::vector<std::pair<int, int>> pairs{{0, 1}};
    for (int i = 2; i < p.n(); ++i) pairs.emplace_back(p.n() + i - 2, i);
    return replay(p, pairs, order == EinsumOrder::LeftToRight ? "left to right (as torch.einsum without opt_einsum)"
                                                               : "one pair");
  }
  if (order == EinsumOrder::Greedy) return greedy_memory(p);
  if (p.n() <= kEinsumOptimalMaxOperands) return optimal(p);
  // Beyond: opt_einsum's greedy, and up to kEinsumGreedyFlopsMaxOperands the greedy by FLOPs
  // too (O(n^3) in all), keeping the cheaper order.
  EinsumOrderPlan best = greedy_memory(p);
  if (p.n() <= kEinsumGreedyFlopsMaxOperands) {
    EinsumOrderPlan by_flops = greedy_flops(p);
    if (by_flops.exact_flops < best.exact_flops) best = std::move(by_flops);
  }
  return best;
}

}  // namespace handgrad
