// Einstein summation with torch.einsum's semantics, lowered onto four kernel families
// (kernels/einsum/): elementwise/broadcast product, middle-axis sum, strided copy (permute,
// diagonal, broadcast) and batched GEMM with either operand transposed.
//
// Supported: explicit ('ij,jk->ik') and implicit ('ij,jk') output, '...' ellipsis, 1..N
// operands (contracted pairwise in the cheapest order, as torch does with opt_einsum; or left to
// right, as torch does without it), repeated indices (diagonals, traces), size-1 broadcasting,
// spaces anywhere. Labels are [a-zA-Z].
// Invalid equations and shape mismatches throw UserError naming the offending index.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "host/tensor.h"

namespace handgrad {

// One side of an equation: its labels in order (0..25 = 'A'..'Z', 26..51 = 'a'..'z') and
// where its ellipsis stands (-1: none; else the number of labels before it).
struct EinsumTerm {
  std::vector<int> labels;
  int ellipsis_at = -1;
};

struct EinsumEquation {
  std::vector<EinsumTerm> inputs;
  bool explicit_output = false;
  EinsumTerm output;
};

// Syntax only (no shapes): throws UserError on a malformed equation.
EinsumEquation parse_einsum(const std::string& equation);

// The order of the pairwise contractions. Auto: the fewest FLOPs (opt_einsum's count: the
// product of the sizes of every label the two operands hold, twice that when one is summed),
// found exactly by dynamic programming over subsets for up to kEinsumOptimalMaxOperands
// operands; beyond, the cheaper of two greedy orders: opt_einsum's (the pair sharing a label
// whose contraction frees the most memory; outer products last) and, up to
// kEinsumGreedyFlopsMaxOperands, the cheapest pair by FLOPs whose result is no larger than the
// largest input or the output. Greedy: opt_einsum's greedy alone. LeftToRight: ((A B) C) ...,
// torch.einsum's order without opt_einsum.
enum class EinsumOrder { Auto, Greedy, LeftToRight };
constexpr int kEinsumOptimalMaxOperands = 13;
constexpr int kEinsumGreedyFlopsMaxOperands = 64;

// One pairwise contraction. Operand ids: the inputs 0..n-1, then step k's result is n + k.
struct EinsumStep {
  int a = 0, b = 0;
  std::vector<int> result;  // its labels (sorted ids): those the output or a later operand needs
  double flops = 0, size = 0;
};
struct EinsumOrderPlan {
  std::vector<EinsumStep> steps;
  double flops = 0, largest = 0;  // in all; the largest intermediate (elements)
  long double exact_flops = 0;    // the same total, finite for any sizes (plans are compared by it)
  std::string method;
};
// Labels are ids as in EinsumTerm (ellipsis dims from 52 on, below 128); sizes are the
// broadcast sizes. Operands here hold each label once (diagonals are taken before); a label
// that only one operand holds and the output lacks is taken as summed beforehand (free).
EinsumOrderPlan plan_einsum_order(const std::vector<std::vector<int>>& inputs, const std::vector<int>& output,
                                  const std::map<int, int64_t>& sizes, EinsumOrder order);

// How an equation was lowered, for tests, the CLI's --plan and docs: the contraction order
// (with each step's FLOPs and result size, and the totals against left to right), then one
// line per kernel call.
struct EinsumPlanLog {
  std::vector<std::string> order;
  std::vector<std::string> steps;
};

// The contraction order einsum() would take for operands of these shapes, without operands
// (opt_einsum.contract_path's question): the labels each operand brings to it (diagonals taken,
// labels nothing else needs summed beforehand), the plan, left to right's for comparison, and
// each step as an equation ("ab,bc->ac"). Throws UserError as einsum() does.
struct EinsumPath {
  std::vector<std::vector<int>> inputs;
  std::vector<int> output;
  std::map<int, int64_t> sizes;
  EinsumOrderPlan plan, left_to_right;
  std::vector<std::string> step_equations;
  double plan_ms = 0;
};
EinsumPath einsum_path(const std::string& equation, const std::vector<Shape>& shapes,
                       EinsumOrder order = EinsumOrder::Auto);

// All operands on one device; the result is on that device.
Tensor einsum(const std::string& equation, const std::vector<const Tensor*>& operands,
              EinsumPlanLog* log = nullptr, EinsumOrder order = EinsumOrder::Auto);

// The three course operations, with exactly torch.einsum's semantics for these equations.
Tensor einsum_mul_abcd(const Tensor& a, const Tensor& b);        // 'abcd,abcd->abcd'
Tensor einsum_contract_abcd_ed(const Tensor& a, const Tensor& b);  // 'abcd,ed->abce'
Tensor einsum_sum_abcd_abd(const Tensor& a);                     // 'abcd->abd'

}  // namespace handgrad
