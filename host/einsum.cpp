#include "host/einsum.h"

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <map>

#include "host/einsum_ops.h"

namespace handgrad {

namespace {

// The character at byte i as a message shows it: a whole UTF-8 sequence as itself ('é', not its
// first byte), a control byte (NUL included) or a byte that starts no valid sequence as \xNN.
std::string character_at(const std::string& text, size_t i) {
  const unsigned char c = static_cast<unsigned char>(text[i]);
  const size_t len = c >= 0xF0 && c <= 0xF4 ? 4 : c >= 0xE0 ? 3 : c >= 0xC2 && c < 0xE0 ? 2 : 1;
  bool whole = len > 1 && i + len <= text.size();
  for (size_t k = 1; whole && k < len; ++k) whole = (static_cast<unsigned char>(text[i + k]) & 0xC0) == 0x80;
  if (whole) return text.substr(i, len);
  if (c >= 0x20 && c < 0x7F) return std::string(1, char(c));
  char buf[8];
  std::snprintf(buf, sizeof buf, "\\x%02x", c);
  return buf;
}


constexpr int kLetters = 52;  // label ids >= 52 are the dims covered by an ellipsis

std::string label_name(int id) {
  if (id < 26) return std::string("'") + char('A' + id) + "'";
  if (id < kLetters) return std::string("'") + char('a' + id - 26) + "'";
  return "of the ellipsis (broadcast dim " + std::to_string(id - kLetters) + ")";
}

using Labels = std::vector<int>;

// 3.4e+07 (FLOP counts and sizes, which overflow int64 in the worst orders).
// Counts as they are (exact below 2^53), in scientific notation only past 10^12.
std::string sci(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, v < 1e12 ? "%.0f" : "%.4g", v);
  return buf;
}

bool contains(const Labels& ls, int l) { return std::find(ls.begin(), ls.end(), l) != ls.end(); }
int position(const Labels& ls, int l) {
  return static_cast<int>(std::find(ls.begin(), ls.end(), l) - ls.begin());
}
std::string labels_str(const Labels& ls) {
  std::string s;
  // Dims covered by an ellipsis print as digits: '...ij' over a rank-4 tensor is "01ij".
  for (int l : ls) s += l < 26 ? char('A' + l) : l < kLetters ? char('a' + l - 26) : char('0' + (l - kLetters) % 10);
  return s.empty() ? "(scalar)" : s;
}

// An operand in flight: either one of the caller's tensors (borrowed) or an intermediate.
struct Operand {
  const Tensor* t = nullptr;
  Tensor owned;
  Labels labels;

  Operand() = default;
  Operand(Operand&& o) noexcept { *this = std::move(o); }
  Operand& operator=(Operand&& o) noexcept {
    const bool owns = o.t == &o.owned;
    owned = std::move(o.owned);
    labels = std::move(o.labels);
    t = owns ? &owned : o.t;
    return *this;
  }

  void own(Tensor&& next) {
    owned = std::move(next);
    t = &owned;
  }
  Tensor take() { return t == &owned ? std::move(owned) : t->clone(); }
};

}  // namespace

// ------------------------------------------------------------------------------------------
// Parsing
// ------------------------------------------------------------------------------------------
EinsumEquation parse_einsum(const std::string& equation) {
  EinsumEquation eq;
  EinsumTerm term;
  bool in_output = false;
  int dots = 0;
  const std::string side_name_in = "operand ";
  auto where = [&]() {
    return in_output ? std::string("the output") : side_name_in + std::to_string(eq.inputs.size());
  };
  for (size_t i = 0; i < equation.size(); ++i) {
    const char c = equation[i];
    // Checked before skipping spaces: an ellipsis is exactly three consecutive dots (". .." is not one).
    if (dots > 0 && c != '.')
      throw UserError(cat("einsum(): found '.' for ", where(), " that is not part of an ellipsis '...'"));
    if (c == ' ' || c == '\t') continue;
    if (c == '.') {
      if (term.ellipsis_at >= 0 && dots == 0)
        throw UserError(cat("einsum(): found '.' for ", where(), " for which an ellipsis was already found"));
      if (++dots == 3) {
        term.ellipsis_at = static_cast<int>(term.labels.size());
        dots = 0;
      }
    } else if (c == ',') {
      if (in_output) throw UserError("einsum(): found ',' in the output (after '->')");
      eq.inputs.push_back(std::move(term));
      term = EinsumTerm();
    } else if (c == '-') {
      if (in_output || i + 1 >= equation.size() || equation[i + 1] != '>')
        throw UserError(cat("einsum(): invalid '-' at index ", i, ": the output is introduced by '->' (once)"));
      ++i;
      eq.inputs.push_back(std::move(term));
      term = EinsumTerm();
      in_output = true;
      eq.explicit_output = true;
    } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')) {
      term.labels.push_back(c <= 'Z' ? c - 'A' : 26 + (c - 'a'));
    } else {
      throw UserError(cat("einsum(): invalid subscript '", character_at(equation, i), "' at index ", i,
                          " in the equation; subscripts must be in [a-zA-Z]"));
    }
  }
  if (dots > 0)
    throw UserError(cat("einsum(): found '.' for ", where(), " that is not part of an ellipsis '...'"));
  if (in_output) {
    eq.output = std::move(term);
    for (size_t i = 0; i < eq.output.labels.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (eq.output.labels[i] == eq.output.labels[j])
          throw UserError(cat("einsum(): output subscript ", label_name(eq.output.labels[i]),
                              " appears more than once in the output"));
  } else {
    eq.inputs.push_back(std::move(term));
  }
  return eq;
}

// ------------------------------------------------------------------------------------------
// Lowering
// ------------------------------------------------------------------------------------------
namespace {

class Planner {
 public:
  Planner(EinsumPlanLog* log) : log_(log) {}

  std::map<int, int64_t> size;  // broadcast size of every label

  void note(const std::string& s) {
    if (log_) log_->steps.push_back(s);
  }

  int64_t dim(const Operand& op, int label) const { return op.t->shape()[position(op.labels, label)]; }

  // Repeated labels in one operand -> their diagonal (one strided copy).
  void take_diagonals(Operand& op) {
    Labels unique;
    for (int l : op.labels)
      if (!contains(unique, l)) unique.push_back(l);
    if (unique.size() == op.labels.size()) return;
    const Shape st = contiguous_strides(op.t->shape());
    Shape shape, strides;
    for (int l : unique) {
      int64_t s = 0;
      for (size_t d = 0; d < op.labels.size(); ++d)
        if (op.labels[d] == l) s += st[d];
      shape.push_back(op.t->shape()[position(op.labels, l)]);
      strides.push_back(s);
    }
    note("diagonal " + labels_str(op.labels) + " -> " + labels_str(unique) + " (strided_copy)");
    op.own(ops::strided_copy(*op.t, shape, strides));
    op.labels = unique;
  }

  // Sum out the labels of `op` that are not in `keep`.
  void sum_unneeded(Operand& op, const Labels& keep) {
    std::vector<int> axes;
    Labels rest;
    for (size_t d = 0; d < op.labels.size(); ++d) {
      if (contains(keep, op.labels[d]))
        rest.push_back(op.labels[d]);
      else
        axes.push_back(static_cast<int>(d));
    }
    if (axes.empty()) return;
    note("sum " + labels_str(op.labels) + " -> " + labels_str(rest) + " (sum_middle)");
    op.own(ops::sum_axes(*op.t, axes));
    op.labels = rest;
  }

  // Reorder `op` to `order` (a permutation of its labels), copying only when needed.
  void arrange(Operand& op, const Labels& order) {
    if (op.labels == order) return;
    std::vector<int> perm;
    for (int l : order) perm.push_back(position(op.labels, l));
    note("permute " + labels_str(op.labels) + " -> " + labels_str(order) + " (strided_copy)");
    op.own(ops::permute(*op.t, perm));
    op.labels = order;
  }

  // Expand the size-1 dims of `op` whose label has a larger size in `target` (stride-0 copy).
  void expand(Operand& op, const std::map<int, int64_t>& target) {
    bool needed = false;
    Shape shape = op.t->shape(), strides = contiguous_strides(op.t->shape());
    for (size_t d = 0; d < op.labels.size(); ++d) {
      auto it = target.find(op.labels[d]);
      if (it != target.end() && shape[d] == 1 && it->second != 1) {
        shape[d] = it->second;
        strides[d] = 0;
        needed = true;
      }
    }
    if (!needed) return;
    note("broadcast " + labels_str(op.labels) + " (strided_copy)");
    op.own(ops::strided_copy(*op.t, shape, strides));
  }

  // A x B over the labels they share; keeps the labels in `keep`. `order`, when it holds
  // exactly the result's labels, is the layout the result should have.
  Operand contract(Operand& a, Operand& b, const Labels& keep, const Labels& order) {
    Labels keep_a = keep, keep_b = keep;
    keep_a.insert(keep_a.end(), b.labels.begin(), b.labels.end());
    keep_b.insert(keep_b.end(), a.labels.begin(), a.labels.end());
    sum_unneeded(a, keep_a);
    sum_unneeded(b, keep_b);

    Labels batch, m, n, k;
    for (int l : a.labels) {
      if (contains(b.labels, l))
        (contains(keep, l) ? batch : k).push_back(l);
      else
        m.push_back(l);
    }
    for (int l : b.labels)
      if (!contains(a.labels, l)) n.push_back(l);

    Operand out;
    if (k.empty()) {  // no summed index: one broadcast product
      Labels out_labels = a.labels;
      out_labels.insert(out_labels.end(), n.begin(), n.end());
      if (std::is_permutation(order.begin(), order.end(), out_labels.begin(), out_labels.end()))
        out_labels = order;
      Shape shape, sa, sb;
      const Shape st_a = contiguous_strides(a.t->shape()), st_b = contiguous_strides(b.t->shape());
      for (int l : out_labels) {
        const bool in_a = contains(a.labels, l), in_b = contains(b.labels, l);
        const int64_t da = in_a ? dim(a, l) : 1, db = in_b ? dim(b, l) : 1;
        const int64_t s = da == 1 ? db : da;  // sizes agree or one is 1 (checked up front)
        shape.push_back(s);
        sa.push_back(in_a && da == s ? st_a[position(a.labels, l)] : 0);
        sb.push_back(in_b && db == s ? st_b[position(b.labels, l)] : 0);
      }
      if (a.t->shape() == b.t->shape() && a.labels == out_labels && b.labels == out_labels) {
        note("multiply " + labels_str(out_labels) + " (mul, contiguous)");
        out.own(ops::mul(*a.t, *b.t));
      } else {
        note("multiply " + labels_str(a.labels) + " x " + labels_str(b.labels) + " -> " +
             labels_str(out_labels) + " (mul_broadcast)");
        out.own(ops::mul_broadcast(*a.t, sa, *b.t, sb, shape));
      }
      out.labels = out_labels;
      return out;
    }

    // An empty operand: the result is zeros (sums over nothing), only its shape to make - the
    // GEMM's index products below could leave int64 for dims that hold no element.
    if (a.t->numel() == 0 || b.t->numel() == 0) {
      Shape shape;
      for (int l : batch) shape.push_back(std::max(dim(a, l), dim(b, l)));
      for (int l : m) shape.push_back(dim(a, l));
      for (int l : n) shape.push_back(dim(b, l));
      out.labels = batch;
      out.labels.insert(out.labels.end(), m.begin(), m.end());
      out.labels.insert(out.labels.end(), n.begin(), n.end());
      note("zeros " + labels_str(out.labels) + " (an operand is empty)");
      out.own(Tensor::zeros(shape, a.t->device()));
      return out;
    }

    // Batched GEMM: A as [batch, M, K] (or [batch, K, M]), B as [batch, K, N] (or [batch, N, K]).
    std::map<int, int64_t> shared;  // batch and summed labels, at the larger of the two sizes
    for (const Labels* ls : {&batch, &k})
      for (int l : *ls) shared[l] = dim(a, l) == 1 ? dim(b, l) : dim(a, l);
    expand(a, shared);
    expand(b, shared);
    auto cat3 = [](const Labels& x, const Labels& y, const Labels& z) {
      Labels r = x;
      r.insert(r.end(), y.begin(), y.end());
      r.insert(r.end(), z.begin(), z.end());
      return r;
    };
    GemmShape s;
    if (a.labels == cat3(batch, k, m) && !m.empty()) {
      s.trans_a = true;
    } else {
      arrange(a, cat3(batch, m, k));
    }
    if (b.labels == cat3(batch, n, k) && !n.empty()) {
      s.trans_b = true;
    } else {
      arrange(b, cat3(batch, k, n));
    }
    auto prod = [&](const Operand& op, const Labels& ls) {
      int64_t p = 1;
      for (int l : ls) p *= dim(op, l);
      return p;
    };
    s.batch = prod(a, batch);
    s.M = prod(a, m);
    s.N = prod(b, n);
    s.K = prod(a, k);
    s.lda = std::max<int64_t>(1, s.trans_a ? s.M : s.K);
    s.ldb = std::max<int64_t>(1, s.trans_b ? s.K : s.N);
    s.stride_a = s.M * s.K;
    s.stride_b = s.K * s.N;
    note(cat("gemm batch=", s.batch, " M=", s.M, " N=", s.N, " K=", s.K, " ",
             s.trans_a ? "T" : "N", s.trans_b ? "T" : "N", " ", labels_str(a.labels), " x ",
             labels_str(b.labels), " -> ", labels_str(cat3(batch, m, n)), " (gemm_batched)"));
    Tensor c = ops::gemm_batched(*a.t, *b.t, s);
    Shape shape;
    for (int l : batch) shape.push_back(dim(a, l));
    for (int l : m) shape.push_back(dim(a, l));
    for (int l : n) shape.push_back(dim(b, l));
    c.reshape_(shape);
    out.own(std::move(c));
    out.labels = cat3(batch, m, n);
    return out;
  }

 private:
  EinsumPlanLog* log_;
};

}  // namespace

namespace {

// The labels of an equation over operands of these shapes: each operand's (the ellipsis
// expanded, repeats kept), the output's, and every label's broadcast size. Throws UserError,
// in torch.einsum's words, when they do not fit.
struct ResolvedEinsum {
  std::vector<Labels> inputs;
  Labels output;
  std::map<int, int64_t> size;
};

ResolvedEinsum resolve_einsum(const std::string& equation, const std::vector<Shape>& shapes) {
  const EinsumEquation eq = parse_einsum(equation);
  const size_t n_ops = shapes.size();
  HG_REQUIRE(n_ops > 0, "einsum(): must provide at least one operand");
  if (eq.inputs.size() < n_ops)
    throw UserError(cat("einsum(): more operands were provided (", n_ops,
                        ") than specified in the equation (", eq.inputs.size(), ")"));
  if (eq.inputs.size() > n_ops)
    throw UserError(cat("einsum(): fewer operands were provided (", n_ops,
                        ") than specified in the equation (", eq.inputs.size(), ")"));

  // Expand ellipses into labels kLetters + j, right-aligned across operands (numpy broadcasting).
  int ell_rank = 0;
  for (size_t i = 0; i < n_ops; ++i) {
    const EinsumTerm& t = eq.inputs[i];
    const int nl = static_cast<int>(t.labels.size()), nd = static_cast<int>(shapes[i].size());
    if (t.ellipsis_at < 0 && nl != nd)
      throw UserError(cat("einsum(): the number of subscripts in the equation (", nl,
                          ") does not match the number of dimensions (", nd, ") for operand ", i,
                          " and no ellipsis was given"));
    if (t.ellipsis_at >= 0 && nl > nd)
      throw UserError(cat("einsum(): the number of subscripts in the equation (", nl,
                          ") is more than the number of dimensions (", nd, ") for operand ", i));
    if (t.ellipsis_at >= 0) ell_rank = std::max(ell_rank, nd - nl);
  }
  auto expand_term = [&](const EinsumTerm& t, int covered) {
    Labels out(t.labels.begin(), t.labels.end());
    if (t.ellipsis_at >= 0) {
      Labels ell;
      for (int j = ell_rank - covered; j < ell_rank; ++j) ell.push_back(kLetters + j);
      out.insert(out.begin() + t.ellipsis_at, ell.begin(), ell.end());
    }
    return out;
  };

  ResolvedEinsum r;
  std::map<int, int> count;  // occurrences of each label over all inputs
  for (size_t i = 0; i < n_ops; ++i) {
    const EinsumTerm& t = eq.inputs[i];
    r.inputs.push_back(expand_term(t, static_cast<int>(shapes[i].size()) - static_cast<int>(t.labels.size())));
    std::map<int, int64_t> own;
    for (size_t d = 0; d < r.inputs[i].size(); ++d) {
      const int l = r.inputs[i][d];
      const int64_t sz = shapes[i][d];
      HG_REQUIRE(sz >= 0, "einsum(): operand ", i, " has a negative dimension (", sz, ")");
      ++count[l];
      auto it = own.find(l);
      if (it != own.end() && it->second != sz)
        throw UserError(cat("einsum(): subscript ", label_name(l), " is repeated for operand ", i,
                            " but the sizes don't match, ", it->second, " != ", sz));
      own[l] = sz;
    }
    for (auto [l, sz] : own) {
      auto it = r.size.find(l);
      if (it == r.size.end() || it->second == 1) {
        r.size[l] = sz;
      } else if (sz != 1 && sz != it->second) {
        throw UserError(cat("einsum(): subscript ", label_name(l), " has size ", sz,
                            " for operand ", i, " which does not broadcast with previously seen size ",
                            it->second));
      }
    }
  }

  if (eq.explicit_output) {
    r.output = expand_term(eq.output, ell_rank);
    for (int l : eq.output.labels)
      if (!count.count(l))
        throw UserError(cat("einsum(): output subscript ", label_name(l),
                            " does not appear in the equation for any input operand"));
  } else {
    for (int j = 0; j < ell_rank; ++j) r.output.push_back(kLetters + j);
    for (auto [l, c] : count)  // std::map: sorted, uppercase before lowercase, as torch
      if (l < kLetters && c == 1) r.output.push_back(l);
  }
  return r;
}

// Operand i's labels that the rest of the equation needs: what take_diagonals and sum_unneeded
// leave of it before the pairwise contractions.
// For every operand, its labels (once each, in order) that the output or another operand holds:
// the others sum away first. Counted per label (how many operands hold it), so that thousands of
// operands cost O(labels), not O(n^2).
std::vector<Labels> needed_labels(const std::vector<Labels>& inputs, const Labels& output) {
  std::map<int, int64_t> holders;
  std::vector<Labels> distinct(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    for (int l : inputs[i])
      if (!contains(distinct[i], l)) distinct[i].push_back(l);
    for (int l : distinct[i]) ++holders[l];
  }
  std::vector<Labels> out(inputs.size());
  for (size_t i = 0; i < inputs.size(); ++i)
    for (int l : distinct[i])
      if (contains(output, l) || holders[l] > 1) out[i].push_back(l);
  return out;
}

// "ab,bc -> ac" for each step of `plan` over operands with these labels.
std::vector<std::string> step_equations(const std::vector<Labels>& inputs, const EinsumOrderPlan& plan,
                                        const char* arrow = "->") {
  std::vector<std::string> names, out;
  for (const Labels& ls : inputs) names.push_back(labels_str(ls));
  for (const EinsumStep& st : plan.steps) {
    names.push_back(labels_str(st.result));
    out.push_back(names[st.a] + "," + names[st.b] + arrow + names.back());
  }
  return out;
}

}  // namespace

EinsumPath einsum_path(const std::string& equation, const std::vector<Shape>& shapes, EinsumOrder order) {
  const ResolvedEinsum r = resolve_einsum(equation, shapes);
  EinsumPath path;
  path.inputs = needed_labels(r.inputs, r.output);
  path.output = r.output;
  path.sizes = r.size;
  const auto t0 = std::chrono::steady_clock::now();
  path.plan = plan_einsum_order(path.inputs, path.output, path.sizes, order);
  path.plan_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  path.left_to_right = plan_einsum_order(path.inputs, path.output, path.sizes, EinsumOrder::LeftToRight);
  path.step_equations = step_equations(path.inputs, path.plan);
  return path;
}

Tensor einsum(const std::string& equation, const std::vector<const Tensor*>& operands,
              EinsumPlanLog* log, EinsumOrder order) {
  const size_t n_ops = operands.size();
  std::vector<Shape> shapes;
  for (size_t i = 0; i < n_ops; ++i) {
    HG_REQUIRE(operands[i] && operands[i]->defined(), "einsum(): operand ", i, " is undefined");
    HG_REQUIRE(operands[i]->dtype() == DType::F32, "einsum(): operand ", i, " is ",
               dtype_name(operands[i]->dtype()), "; einsum takes float32");
    HG_REQUIRE(operands[i]->device() == operands[0]->device(), "einsum(): operand ", i, " is on ",
               device_name(operands[i]->device()), ", operand 0 on ",
               device_name(operands[0]->device()));
    shapes.push_back(operands[i]->shape());
  }
  ResolvedEinsum resolved = resolve_einsum(equation, shapes);
  const Labels out_labels = resolved.output;

  Planner plan(log);
  plan.size = resolved.size;
  std::vector<Operand> ops(n_ops);
  for (size_t i = 0; i < n_ops; ++i) {
    ops[i].t = operands[i];
    ops[i].labels = resolved.inputs[i];
  }

  // Diagonals first, then labels that no other operand and not the output needs.
  const std::vector<Labels> needed = needed_labels(resolved.inputs, out_labels);
  for (size_t i = 0; i < n_ops; ++i) {
    plan.take_diagonals(ops[i]);
    plan.sum_unneeded(ops[i], needed[i]);
  }

  // Pairwise contractions in the planned order; each result joins the operands.
  std::vector<Labels> input_labels;
  for (const Operand& op : ops) input_labels.push_back(op.labels);
  const auto plan_start = std::chrono::steady_clock::now();
  const EinsumOrderPlan order_plan = plan_einsum_order(input_labels, out_labels, plan.size, order);
  const double plan_ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - plan_start).count();
  if (log && !order_plan.steps.empty()) {
    const EinsumOrderPlan l2r = plan_einsum_order(input_labels, out_labels, plan.size, EinsumOrder::LeftToRight);
    const std::vector<std::string> eqs = step_equations(input_labels, order_plan, " -> ");
    for (size_t k = 0; k < order_plan.steps.size(); ++k) {
      const EinsumStep& st = order_plan.steps[k];
      log->order.push_back(cat("step ", k + 1, ": ", eqs[k], "  ", sci(st.flops), " FLOPs, result ", sci(st.size),
                               " elements"));
    }
    char planned[32];
    std::snprintf(planned, sizeof planned, "%.3f", plan_ms);
    log->order.push_back(cat(order_plan.method, " (planned in ", planned, " ms): ", sci(order_plan.flops),
                             " FLOPs, largest intermediate ", sci(order_plan.largest), " elements; left to right: ",
                             sci(l2r.flops), " FLOPs, largest ", sci(l2r.largest)));
  }
  for (size_t k = 0; k < order_plan.steps.size(); ++k) {
    const EinsumStep& st = order_plan.steps[k];
    const bool last = k + 1 == order_plan.steps.size();
    Operand next = plan.contract(ops[st.a], ops[st.b], st.result, last ? out_labels : Labels{});
    ops[st.a] = Operand(), ops[st.b] = Operand();  // consumed: their intermediates can go
    ops.push_back(std::move(next));
  }
  Operand result = std::move(ops.back());
  plan.sum_unneeded(result, out_labels);
  plan.expand(result, plan.size);
  plan.arrange(result, out_labels);

  Tensor out = result.take();
  Shape out_shape;
  for (int l : out_labels) out_shape.push_back(plan.size[l]);
  out.reshape_(out_shape);
  return out;
}

// ------------------------------------------------------------------------------------------
// The course operations
// ------------------------------------------------------------------------------------------
namespace {
void require_rank(const Tensor& t, int rank, const char* eq, const char* name) {
  HG_REQUIRE(t.ndim() == rank, "einsum('", eq, "'): ", name, " must have ", rank,
             " dimensions, got ", shape_str(t.shape()));
}
}  // namespace

Tensor einsum_mul_abcd(const Tensor& a, const Tensor& b) {
  require_rank(a, 4, "abcd,abcd->abcd", "the first operand");
  require_rank(b, 4, "abcd,abcd->abcd", "the second operand");
  return einsum("abcd,abcd->abcd", {&a, &b});
}

Tensor einsum_contract_abcd_ed(const Tensor& a, const Tensor& b) {
  require_rank(a, 4, "abcd,ed->abce", "the first operand");
  require_rank(b, 2, "abcd,ed->abce", "the second operand");
  return einsum("abcd,ed->abce", {&a, &b});
}

Tensor einsum_sum_abcd_abd(const Tensor& a) {
  require_rank(a, 4, "abcd->abd", "the operand");
  return einsum("abcd->abd", {&a});
}

}  // namespace handgrad
