// Q4: automatic differentiation on an evaluation trace (a Wengert list), numbered as the
// course numbers it: inputs v_{-1}, v_0 (v_{1-n} .. v_0 for n inputs), intermediates v_1,
// v_2, ..., outputs y_1 .. y_m. Forward mode gives the primal and tangent traces for a seed
// direction; reverse mode gives the primal trace and the adjoint sweep, one row per edge, with
// the edge's term and the running adjoint after it. The full Jacobian comes both ways.
#pragma once
#include <optional>
#include <string>
#include <vector>

namespace handgrad {

struct AdNode {
  enum Op { Input, Output, Add, Sub, Mul, Div, Neg, Square, Pow, Exp, Log, Sin, Cos, Relu, Const } op;
  int a = -1, b = -1;  // argument node indices
  double c = 0;        // Const value, or Pow's integer exponent
};

struct AdGraph {
  std::vector<AdNode> nodes;  // inputs first, outputs last; each node only uses earlier ones
  int n_inputs = 0, n_outputs = 0;
  std::string name;
};

// The homework's functions: `squared` is y1 = (x1 + x2)^2, y2 = (x1 - x2)^2 with the trace
// v1 = v-1 + v0, v2 = v-1 - v0, v3 = v1^2, v4 = v2^2; `expanded` is y1 = x1^2 + 2 x1 x2 + x2^2,
// y2 = x1^2 - 2 x1 x2 + x2^2. Anything else is a UserError.
AdGraph builtin_function(const std::string& name);
// Parses "y1 = (x1 + x2)^2; y2 = exp(x1) * x2" over inputs x1..xN: + - * / ^integer, unary
// minus, numbers, exp log sin cos relu square. Outputs must be y1, y2, ... in order.
AdGraph parse_functions(const std::string& text);

// One row of a table, as the homework lays it out. In forward tables: primal "v_1 = v_{-1} +
// v_0", its value, the tangent "v̇_1 = v̇_{-1} + v̇_0" and its value. In reverse tables: the
// primal (absent on the second edge row of a node), the adjoint update and the running adjoint
// after it, and `contribution`, the edge term alone, on edges into a node with several uses.
struct AdRow {
  std::optional<std::string> primal;
  std::optional<double> value;
  std::string derivative;
  double dvalue = 0;
  std::optional<double> contribution;
};

struct AdTable {
  std::string name;  // "Table 1: forward mode, seed x1"
  bool forward = true;
  int seed = 0;  // input index (forward) or output index (reverse), 0-based
  std::vector<AdRow> rows;
};

struct AdResult {
  std::vector<double> point;
  std::vector<AdTable> tables;  // n forward tables, then m reverse tables
  std::vector<std::vector<double>> jacobian_forward, jacobian_reverse;  // [m][n]
  std::vector<double> outputs;
  int operations = 0;           // arithmetic nodes in the trace
};

AdResult autodiff(const AdGraph& g, const std::vector<double>& point);

// Text tables (the homework's four for two inputs and two outputs) and the Jacobians.
std::string render_text(const AdGraph& g, const AdResult& r);
// {"function", "point", "tables": [{"name", "mode", "seed", "rows": [...]}], "jacobian"}.
std::string render_json(const AdGraph& g, const AdResult& r);

}  // namespace handgrad
