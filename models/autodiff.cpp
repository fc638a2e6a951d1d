#include "models/autodiff.h"

#include <cctype>
#include <cmath>
#include <cstdio>
#include <nlohmann/json.hpp>

#include "kernels/error.h"

namespace handgrad {

namespace {

// ----------------------------------------------------------------------------------------------
// Names in the course's notation
// ----------------------------------------------------------------------------------------------
struct Namer {
  const AdGraph& g;
  // Node k's trace name: inputs v_{1-n}..v_0, then v_1.., outputs y_1..
  std::string v(int k) const {
    const AdNode& nd = g.nodes[k];
    if (nd.op == AdNode::Output) return "y_" + std::to_string(k - first_output() + 1);
    const int idx = k - g.n_inputs + 1;
    return idx < 0 ? "v_{" + std::to_string(idx) + "}" : "v_" + std::to_string(idx);
  }
  int first_output() const { return static_cast<int>(g.nodes.size()) - g.n_outputs; }
  std::string dot(int k) const { return with_accent(v(k), "\u0307"); }   // v̇
  std::string bar(int k) const { return with_accent(v(k), "\u0304"); }   // v̄
  static std::string with_accent(const std::string& name, const char* accent) {
    return name.substr(0, 1) + accent + name.substr(1);
  }
  std::string num(double c) const {
    char b[32];
    std::snprintf(b, sizeof b, "%g", c);
    return b;
  }
  // `term` times node k's partial w.r.t. argument `which`, as a summand: "v̄_1" for a partial of
  // 1, " - v̄_2" for -1, "2v_1 · v̄_3" otherwise (with " + " in front unless it comes first).
  std::string scaled(int k, int which, const std::string& term, bool first) const {
    const std::string p = partial(k, which);
    if (p == "1") return (first ? "" : " + ") + term;
    if (p == "(-1)") return (first ? "-" : " - ") + term;
    return (first ? "" : " + ") + p + " · " + term;
  }
  // The primal expression of node k: "v_1 = v_{-1} + v_0".
  std::string primal(int k) const {
    const AdNode& n = g.nodes[k];
    const std::string a = n.a >= 0 ? v(n.a) : "", b = n.b >= 0 ? v(n.b) : "";
    std::string rhs;
    switch (n.op) {
      case AdNode::Input: rhs = "x_" + std::to_string(k + 1); break;
      case AdNode::Output: rhs = a; break;
      case AdNode::Add: rhs = a + " + " + b; break;
      case AdNode::Sub: rhs = a + " - " + b; break;
      case AdNode::Mul: rhs = a + " * " + b; break;
      case AdNode::Div: rhs = a + " / " + b; break;
      case AdNode::Neg: rhs = "-" + a; break;
      case AdNode::Square: rhs = a + "^2"; break;
      case AdNode::Pow: rhs = a + "^" + num(n.c); break;
      case AdNode::Exp: rhs = "exp(" + a + ")"; break;
      case AdNode::Log: rhs = "log(" + a + ")"; break;
      case AdNode::Sin: rhs = "sin(" + a + ")"; break;
      case AdNode::Cos: rhs = "cos(" + a + ")"; break;
      case AdNode::Relu: rhs = "relu(" + a + ")"; break;
      case AdNode::Const: rhs = num(n.c); break;
    }
    return v(k) + " = " + rhs;
  }
  // The local partial of node k with respect to its argument `which` (0: a, 1: b), as text.
  std::string partial(int k, int which) const {
    const AdNode& n = g.nodes[k];
    const std::string a = n.a >= 0 ? v(n.a) : "", b = n.b >= 0 ? v(n.b) : "";
    switch (n.op) {
      case AdNode::Output: case AdNode::Add: return "1";
      case AdNode::Sub: return which == 0 ? "1" : "(-1)";
      case AdNode::Mul: return which == 0 ? b : a;
      case AdNode::Div: return which == 0 ? "(1/" + b + ")" : "(-" + a + "/" + b + "^2)";
      case AdNode::Neg: return "(-1)";
      case AdNode::Square: return "2" + a;
      case AdNode::Pow: return num(n.c) + a + "^" + num(n.c - 1);
      case AdNode::Exp: return "exp(" + a + ")";
      case AdNode::Log: return "(1/" + a + ")";
      case AdNode::Sin: return "cos(" + a + ")";
      case AdNode::Cos: return "(-sin(" + a + "))";
      case AdNode::Relu: return "[" + a + " > 0]";
      default: return "0";
    }
  }
};

double eval_op(const AdNode& n, const std::vector<double>& val) {
  const double a = n.a >= 0 ? val[n.a] : 0, b = n.b >= 0 ? val[n.b] : 0;
  switch (n.op) {
    case AdNode::Output: return a;
    case AdNode::Add: return a + b;
    case AdNode::Sub: return a - b;
    case AdNode::Mul: return a * b;
    case AdNode::Div: return a / b;
    case AdNode::Neg: return -a;
    case AdNode::Square: return a * a;
    case AdNode::Pow: return std::pow(a, n.c);
    case AdNode::Exp: return std::exp(a);
    case AdNode::Log: return std::log(a);
    case AdNode::Sin: return std::sin(a);
    case AdNode::Cos: return std::cos(a);
    case AdNode::Relu: return a > 0 ? a : 0;
    case AdNode::Const: return n.c;
    case AdNode::Input: break;
  }
  return 0;
}

// d node / d argument `which`, at the primal values.
double local_partial(const AdNode& n, int which, const std::vector<double>& val) {
  const double a = n.a >= 0 ? val[n.a] : 0, b = n.b >= 0 ? val[n.b] : 0;
  switch (n.op) {
    case AdNode::Output: case AdNode::Add: return 1;
    case AdNode::Sub: return which == 0 ? 1 : -1;
    case AdNode::Mul: return which == 0 ? b : a;
    case AdNode::Div: return which == 0 ? 1 / b : -(a / b) / b;  // as torch: b * b underflows first
    case AdNode::Neg: return -1;
    case AdNode::Square: return 2 * a;
    case AdNode::Pow: return n.c * std::pow(a, n.c - 1);
    case AdNode::Exp: return std::exp(a);
    case AdNode::Log: return 1 / a;
    case AdNode::Sin: return std::cos(a);
    case AdNode::Cos: return -std::sin(a);
    case AdNode::Relu: return a > 0 ? 1 : 0;
    default: return 0;
  }
}

// d node / d argument `which` times `flow` (a tangent or an adjoint), as PyTorch's autograd has it
// where the plain product would be 0 * inf: ReLU passes nothing where it is off (threshold_backward:
// where(x > 0, flow, 0), also for an infinite flow) and x^0's derivative is 0, also at x = 0
// (pow_backward masks exponent 0; 0 * 0^-1 would be NaN).
double chain(const AdNode& n, int which, const std::vector<double>& val, double flow) {
  if (n.op == AdNode::Relu) return val[n.a] > 0 ? flow : 0;
  if (n.op == AdNode::Pow && n.c == 0) return 0;
  return local_partial(n, which, val) * flow;
}

int arity(const AdNode& n) {
  switch (n.op) {
    case AdNode::Input: case AdNode::Const: return 0;
    case AdNode::Add: case AdNode::Sub: case AdNode::Mul: case AdNode::Div: return 2;
    default: return 1;
  }
}

// ----------------------------------------------------------------------------------------------
// The expression parser
// ----------------------------------------------------------------------------------------------
class Parser {
 public:
  // Limits that keep the traces a size a person reads (and the work bounded: a 35 KB --expr with
  // 3,000 outputs took 128 s and printed 991 MB): inputs x1..x16, outputs y1..y16, 2,000 operations.
  static constexpr int kMaxOutputs = 16;
  static constexpr size_t kMaxNodes = 2000;
  Parser(const std::string& s, AdGraph& g) : s_(s), g_(g) {}

  // Parses one "yK = expr" and returns the root node of expr.
  int definition(int expected_output) {
    ws();
    std::string name = ident();
    if (name != "y" + std::to_string(expected_output))
      fail(cat("expected output 'y", expected_output, "' (outputs are y1, y2, ... in order)"));
    ws();
    if (!eat('=')) fail("expected '=' after " + name);
    const int root = expr();
    ws();
    return root;
  }
  bool at_end() {
    ws();
    return i_ >= s_.size();
  }
  bool eat(char c) {
    ws();
    if (i_ < s_.size() && s_[i_] == c) {
      ++i_;
      return true;
    }
    return false;
  }
  // At most 60 characters of the expression, around the position (the CLI escapes control
  // characters in every message).
  [[noreturn]] void fail(const std::string& why) const {
    const size_t from = s_.size() <= 60 ? 0 : std::min(s_.size() - 60, i_ > 30 ? i_ - 30 : 0);
    const std::string shown =
        (from > 0 ? "..." : "") + s_.substr(from, 60) + (from + 60 < s_.size() ? "..." : "");
    throw UserError(cat("--expr: ", why, " at position ", i_ + 1, " of \"", shown, "\""));
  }
  int max_input = 0;
  std::vector<std::pair<int, int>> input_refs;  // (node placeholder, input number)

 private:
  void ws() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  std::string ident() {
    ws();
    const size_t b = i_;
    while (i_ < s_.size() && (std::isalnum(static_cast<unsigned char>(s_[i_])) || s_[i_] == '_')) ++i_;
    return s_.substr(b, i_ - b);
  }
  int node(AdNode::Op op, int a = -1, int b = -1, double c = 0) {
    if (g_.nodes.size() >= kMaxNodes) fail(cat("more than ", kMaxNodes, " operations"));
    g_.nodes.push_back({op, a, b, c});
    return static_cast<int>(g_.nodes.size()) - 1;
  }
  // Recursive descent, so the nesting of parentheses and unary minus signs is bounded: 20,000
  // '(' would otherwise overflow the stack.
  static constexpr int kMaxNesting = 256;
  int nesting_ = 0;
  struct Nest {
    int& n;
    explicit Nest(Parser& p) : n(p.nesting_) {
      if (++n > kMaxNesting) p.fail("expression nested too deeply (parentheses and minus signs)");
    }
    ~Nest() { --n; }
  };
  int expr() {
    const Nest nest(*this);
    int l = term();
    while (true) {
      if (eat('+')) l = node(AdNode::Add, l, term());
      else if (eat('-')) l = node(AdNode::Sub, l, term());
      else return l;
    }
  }
  int term() {
    int l = unary();
    while (true) {
      if (eat('*')) l = node(AdNode::Mul, l, unary());
      else if (eat('/')) l = node(AdNode::Div, l, unary());
      else return l;
    }
  }
  int unary() {
    const Nest nest(*this);
    if (eat('-')) return node(AdNode::Neg, unary());
    return power();
  }
  int power() {
    const int base = atom();
    if (!eat('^')) return base;
    ws();
    const size_t b = i_;
    while (i_ < s_.size() && std::isdigit(static_cast<unsigned char>(s_[i_]))) ++i_;
    if (b == i_) fail("'^' takes a non-negative integer exponent");
    if (i_ - b > 2) fail("exponent too large (at most 64)");
    const int e = std::stoi(s_.substr(b, i_ - b));
    if (e > 64) fail("exponent too large (at most 64)");
    return e == 2 ? node(AdNode::Square, base) : node(AdNode::Pow, base, -1, e);
  }
  int atom() {
    ws();
    if (i_ >= s_.size()) fail("unexpected end of expression");
    if (eat('(')) {
      const int e = expr();
      if (!eat(')')) fail("expected ')'");
      return e;
    }
    if (std::isdigit(static_cast<unsigned char>(s_[i_])) || s_[i_] == '.') {
      size_t used = 0;
      double v = 0;
      try {
        v = std::stod(s_.substr(i_), &used);
      } catch (const std::exception&) {
        fail("bad number");
      }
      i_ += used;
      return node(AdNode::Const, -1, -1, v);
    }
    const std::string id = ident();
    if (id.empty()) fail(cat("unexpected '", s_[i_], "'"));
    if (id.size() >= 2 && id[0] == 'x' && std::all_of(id.begin() + 1, id.end(), ::isdigit)) {
      const int k = id.size() <= 3 ? std::stoi(id.substr(1)) : 0;  // x1 .. x16: no longer names to convert
      if (k < 1 || k > 16) fail("inputs are x1 .. x16");
      max_input = std::max(max_input, k);
      const int placeholder = node(AdNode::Input, -1, -1, k);  // resolved to the real input later
      input_refs.emplace_back(placeholder, k);
      return placeholder;
    }
    static const std::pair<const char*, AdNode::Op> funcs[] = {{"exp", AdNode::Exp},   {"log", AdNode::Log},
                                                               {"sin", AdNode::Sin},   {"cos", AdNode::Cos},
                                                               {"relu", AdNode::Relu}, {"square", AdNode::Square}};
    for (const auto& [fname, op] : funcs)
      if (id == fname) {
        if (!eat('(')) fail("expected '(' after " + id);
        const int a = expr();
        if (!eat(')')) fail("expected ')'");
        return node(op, a);
      }
    fail("unknown name '" + id + "' (inputs are x1, x2, ...; functions exp log sin cos relu square)");
  }

  const std::string& s_;
  AdGraph& g_;
  size_t i_ = 0;
};

}  // namespace

AdGraph builtin_function(const std::string& name) {
  AdGraph g;
  g.name = name;
  g.n_inputs = 2;
  g.n_outputs = 2;
  auto add = [&](AdNode::Op op, int a = -1, int b = -1, double c = 0) {
    g.nodes.push_back({op, a, b, c});
    return static_cast<int>(g.nodes.size()) - 1;
  };
  const int x1 = add(AdNode::Input), x2 = add(AdNode::Input);
  if (name == "squared") {  // the homework's trace, in its order
    const int v1 = add(AdNode::Add, x1, x2), v2 = add(AdNode::Sub, x1, x2);
    const int v3 = add(AdNode::Square, v1), v4 = add(AdNode::Square, v2);
    add(AdNode::Output, v3);
    add(AdNode::Output, v4);
  } else if (name == "expanded") {
    const int s1 = add(AdNode::Square, x1), s2 = add(AdNode::Square, x2);
    const int two = add(AdNode::Const, -1, -1, 2);
    const int p = add(AdNode::Mul, x1, x2), tp = add(AdNode::Mul, two, p);
    const int y1 = add(AdNode::Add, add(AdNode::Add, s1, tp), s2);
    const int y2 = add(AdNode::Add, add(AdNode::Sub, s1, tp), s2);
    add(AdNode::Output, y1);
    add(AdNode::Output, y2);
  } else {
    throw UserError("--function must be squared or expanded (or give --expr), got '" + name + "'");
  }
  return g;
}

AdGraph parse_functions(const std::string& text) {
  // Parse into a scratch graph whose input references are placeholders, then renumber: inputs
  // first, then the operations in parse order, then one Output node per definition.
  AdGraph scratch;
  Parser p(text, scratch);
  std::vector<int> roots;
  do {
    if (p.at_end()) break;
    if (roots.size() >= Parser::kMaxOutputs) p.fail(cat("more than ", Parser::kMaxOutputs, " outputs"));
    roots.push_back(p.definition(static_cast<int>(roots.size()) + 1));
  } while (p.eat(';'));
  if (!p.at_end()) p.fail("expected ';' between definitions");
  HG_REQUIRE(!roots.empty(), "--expr: no definitions (write e.g. \"y1 = (x1 + x2)^2; y2 = x1 * x2\")");
  HG_REQUIRE(p.max_input > 0, "--expr: the functions use no input x1, x2, ...");
  AdGraph g;
  g.name = "expr";
  g.n_inputs = p.max_input;
  g.n_outputs = static_cast<int>(roots.size());
  std::vector<int> map(scratch.nodes.size(), -1);
  for (int k = 0; k < g.n_inputs; ++k) g.nodes.push_back({AdNode::Input, -1, -1, 0});
  for (const auto& [ph, k] : p.input_refs) map[ph] = k - 1;
  for (size_t k = 0; k < scratch.nodes.size(); ++k) {
    if (map[k] >= 0) continue;
    AdNode n = scratch.nodes[k];
    if (n.a >= 0) n.a = map[n.a];
    if (n.b >= 0) n.b = map[n.b];
    g.nodes.push_back(n);
    map[k] = static_cast<int>(g.nodes.size()) - 1;
  }
  for (int r : roots) g.nodes.push_back({AdNode::Output, map[r], -1, 0});
  return g;
}

AdResult autodiff(const AdGraph& g, const std::vector<double>& point) {
  HG_REQUIRE(static_cast<int>(point.size()) == g.n_inputs, "--point needs ", g.n_inputs, " values, got ",
             point.size());
  const int N = static_cast<int>(g.nodes.size()), first_out = N - g.n_outputs;
  const Namer nm{g};
  AdResult r;
  r.point = point;
  // Primal trace.
  std::vector<double> val(N);
  for (int k = 0; k < N; ++k) {
    if (g.nodes[k].op == AdNode::Input) val[k] = point[k];
    else val[k] = eval_op(g.nodes[k], val);
    if (g.nodes[k].op != AdNode::Input && g.nodes[k].op != AdNode::Output && g.nodes[k].op != AdNode::Const) ++r.operations;
  }
  for (int k = first_out; k < N; ++k) r.outputs.push_back(val[k]);
  r.jacobian_forward.assign(g.n_outputs, std::vector<double>(g.n_inputs));
  r.jacobian_reverse = r.jacobian_forward;

  // Forward mode: one pass per input direction.
  for (int s = 0; s < g.n_inputs; ++s) {
    AdTable t;
    t.name = cat("Table ", s + 1, ": forward mode, seed x", s + 1, " (", nm.dot(s), " = 1)");
    t.forward = true;
    t.seed = s;
    // Only arguments that depend on the seed carry a tangent (PyTorch's forward AD: a constant's
    // tangent is undefined, not 0): 1/x at 0 is -inf, as in reverse mode, not 0 * (1/0) + ... = NaN.
    std::vector<double> dot(N, 0.0);
    std::vector<char> depends(N, 0);
    for (int k = 0; k < N; ++k) {
      const AdNode& n = g.nodes[k];
      AdRow row;
      row.primal = nm.primal(k);
      row.value = val[k];
      if (n.op == AdNode::Input) {
        dot[k] = k == s ? 1 : 0;
        depends[k] = k == s;
        row.derivative = nm.dot(k) + " = " + (k == s ? "1" : "0");
      } else if (n.op == AdNode::Const) {
        row.derivative = nm.dot(k) + " = 0";
      } else {
        std::string expr;
        for (int w = 0; w < arity(n); ++w) {
          const int arg = w == 0 ? n.a : n.b;
          if (depends[arg]) dot[k] += chain(n, w, val, dot[arg]);
          depends[k] = depends[k] || depends[arg];
          expr += nm.scaled(k, w, nm.dot(arg), w == 0);
        }
        row.derivative = nm.dot(k) + " = " + expr;
      }
      row.dvalue = dot[k] + 0.0;
      t.rows.push_back(row);
    }
    for (int o = 0; o < g.n_outputs; ++o) r.jacobian_forward[o][s] = dot[first_out + o];
    r.tables.push_back(std::move(t));
  }

  // Reverse mode: one sweep per output. Rows: an x̄ row per input, then, for every other node
  // in forward order, one row per argument edge (the adjoint it updates); the sweep applies them
  // bottom-up, so each row's dvalue is that adjoint's running value after the row.
  std::vector<int> uses(N, 0);
  for (const AdNode& n : g.nodes) {
    if (n.a >= 0) ++uses[n.a];
    if (n.b >= 0) ++uses[n.b];
  }
  for (int s = 0; s < g.n_outputs; ++s) {
    AdTable t;
    t.name = cat("Table ", g.n_inputs + s + 1, ": reverse mode, seed y", s + 1, " (", nm.bar(first_out + s), " = 1)");
    t.forward = false;
    t.seed = s;
    struct Edge { int node, which; };
    std::vector<Edge> edges;
    for (int k = g.n_inputs; k < N; ++k)
      for (int w = 0; w < arity(g.nodes[k]); ++w) edges.push_back({k, w});
    // Likewise only nodes the seeded output depends on pass an adjoint down (the others' adjoint is
    // undefined in PyTorch, not 0): their zero times an infinite partial would be NaN.
    std::vector<double> adj(N, 0.0);
    std::vector<char> reaches(N, 0);
    for (int o = 0; o < g.n_outputs; ++o) adj[first_out + o] = o == s ? 1 : 0;
    reaches[first_out + s] = 1;
    std::vector<AdRow> edge_rows(edges.size());
    for (size_t e = edges.size(); e-- > 0;) {  // bottom-up
      const AdNode& n = g.nodes[edges[e].node];
      const int arg = edges[e].which == 0 ? n.a : n.b;
      // Edges run from the last node down: every consumer of a node has been seen before its own.
      const bool live = reaches[edges[e].node];
      reaches[arg] = reaches[arg] || live;
      const double term = live ? chain(n, edges[e].which, val, adj[edges[e].node]) : 0.0;
      const bool accumulates = uses[arg] > 1;
      adj[arg] += term;
      AdRow& row = edge_rows[e];
      if (edges[e].which == 0) {
        row.primal = nm.primal(edges[e].node);
        row.value = val[edges[e].node];
      }
      const std::string step = nm.scaled(edges[e].node, edges[e].which, nm.bar(edges[e].node), !accumulates);
      row.derivative = nm.bar(arg) + " = " + (accumulates ? nm.bar(arg) : "") + step;
      if (n.op == AdNode::Output) row.derivative = nm.bar(arg) + " = " + nm.bar(edges[e].node);
      row.dvalue = adj[arg] + 0.0;
      if (accumulates) row.contribution = term + 0.0;  // + 0.0: no "-0" in the tables
    }
    for (int k = 0; k < g.n_inputs; ++k) {
      AdRow row;
      row.primal = nm.primal(k);
      row.value = val[k];
      row.derivative = "x\u0304_" + std::to_string(k + 1) + " = " + nm.bar(k);
      row.dvalue = adj[k];
      t.rows.push_back(row);
      r.jacobian_reverse[s][k] = adj[k];
    }
    for (AdRow& row : edge_rows) t.rows.push_back(std::move(row));
    r.tables.push_back(std::move(t));
  }
  return r;
}

std::string render_text(const AdGraph& g, const AdResult& r) {
  std::string out = cat("Function '", g.name, "' at (");
  for (size_t i = 0; i < r.point.size(); ++i) out += cat(i ? ", " : "", r.point[i]);
  out += cat("): ", r.operations, " operations in the trace\n");
  for (const AdTable& t : r.tables) {
    out += "\n" + t.name + "\n";
    char line[512];
    std::snprintf(line, sizeof line, "  %-30s %10s   %-44s %10s %s\n", t.forward ? "primal trace" : "primal trace",
                  "value", t.forward ? "tangent trace" : "adjoint trace", "value", t.forward ? "" : "   (edge term)");
    out += line;
    for (const AdRow& row : t.rows) {
      std::string contribution = row.contribution ? cat("   (", *row.contribution, ")") : "";
      // Pad by characters, not bytes: the accents are two bytes each in UTF-8.
      auto pad = [](const std::string& s, size_t width) {
        size_t chars = 0;
        for (unsigned char c : s) chars += (c & 0xC0) != 0x80;
        return s + std::string(chars < width ? width - chars : 0, ' ');
      };
      char v[32] = "", d[32];
      if (row.value) std::snprintf(v, sizeof v, "%10g", *row.value);
      std::snprintf(d, sizeof d, "%10g", row.dvalue);
      out += "  " + pad(row.primal.value_or(""), 30) + " " + (row.value ? std::string(v) : std::string(10, ' ')) +
             "   " + pad(row.derivative, 44) + " " + d + contribution + "\n";
    }
  }
  auto mat = [&](const char* title, const std::vector<std::vector<double>>& J) {
    std::string s = cat("\nJacobian from ", title, ":\n");
    for (const auto& row : J) {
      s += "  [";
      for (size_t j = 0; j < row.size(); ++j) s += cat(j ? ", " : "", row[j]);
      s += "]\n";
    }
    return s;
  };
  out += mat("forward mode (one pass per input)", r.jacobian_forward);
  out += mat("reverse mode (one sweep per output)", r.jacobian_reverse);
  out += r.jacobian_forward == r.jacobian_reverse ? "The two modes agree.\n" : "THE TWO MODES DISAGREE.\n";
  return out;
}

std::string render_json(const AdGraph& g, const AdResult& r) {
  nlohmann::ordered_json j;
  j["function"] = g.name;
  j["point"] = r.point;
  j["tables"] = nlohmann::ordered_json::array();
  for (const AdTable& t : r.tables) {
    nlohmann::ordered_json rows = nlohmann::ordered_json::array();
    for (const AdRow& row : t.rows) {
      nlohmann::ordered_json x;
      x["primal"] = row.primal ? nlohmann::ordered_json(*row.primal) : nlohmann::ordered_json(nullptr);
      x["value"] = row.value ? nlohmann::ordered_json(*row.value) : nlohmann::ordered_json(nullptr);
      x["derivative"] = row.derivative;
      x["dvalue"] = row.dvalue;
      if (row.contribution) x["contribution"] = *row.contribution;
      rows.push_back(x);
    }
    j["tables"].push_back({{"name", t.name}, {"mode", t.forward ? "forward" : "reverse"},
                           {"seed", cat(t.forward ? "x" : "y", t.seed + 1)}, {"rows", rows}});
  }
  j["jacobian"] = r.jacobian_reverse;
  j["jacobian_forward"] = r.jacobian_forward;
  j["operations"] = r.operations;
  return j.dump(2);
}

}  // namespace handgrad
