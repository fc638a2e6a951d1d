// Einstein summation with torch.einsum's semantics, lowered onto four kernel families
// (kernels/einsum/): elementwise/broadcast product, middle-axis sum, strided copy (permute,
// diagonal, broadcast) and batched GEMM with either operand transposed.
//
// Supported: explicit ('ij,jk->ik') and implicit ('ij,jk') output, '...' ellipsis, 1..N
// operands (contracted pairwise, left to right, as torch does without opt_einsum), repeated
// indices (diagonals, traces), size-1 broadcasting, spaces anywhere. Labels are [a-zA-Z].
// Invalid equations and shape mismatches throw UserError naming the offending index.
#pragma once
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

// How an equation was lowered: one line per kernel call, for tests, the CLI's --plan and docs.
struct EinsumPlanLog {
  std::vector<std::string> steps;
};

// All operands on one device; the result is on that device.
Tensor einsum(const std::string& equation, const std::vector<const Tensor*>& operands,
              EinsumPlanLog* log = nullptr);

// The three course operations, with exactly torch.einsum's semantics for these equations.
Tensor einsum_mul_abcd(const Tensor& a, const Tensor& b);        // 'abcd,abcd->abcd'
Tensor einsum_contract_abcd_ed(const Tensor& a, const Tensor& b);  // 'abcd,ed->abce'
Tensor einsum_sum_abcd_abd(const Tensor& a);                     // 'abcd->abd'

}  // namespace handgrad
