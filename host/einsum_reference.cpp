#include "host/einsum_reference.h"

#include <algorithm>
#include <cmath>
#include <map>

#include "host/einsum.h"

namespace handgrad {

ReferenceResult einsum_reference(const std::string& equation,
                                 const std::vector<const Tensor*>& operands) {
  const EinsumEquation eq = parse_einsum(equation);
  HG_REQUIRE(eq.inputs.size() == operands.size(), "reference: operand count");
  // Ellipsis dims become labels 100 + j, right-aligned.
  int ell = 0;
  for (size_t i = 0; i < operands.size(); ++i)
    if (eq.inputs[i].ellipsis_at >= 0)
      ell = std::max<int>(ell, operands[i]->ndim() - static_cast<int>(eq.inputs[i].labels.size()));
  auto expand = [&](const EinsumTerm& t, int covered) {
    std::vector<int> ls = t.labels;
    if (t.ellipsis_at >= 0) {
      std::vector<int> e;
      for (int j = ell - covered; j < ell; ++j) e.push_back(100 + j);
      ls.insert(ls.begin() + t.ellipsis_at, e.begin(), e.end());
    }
    return ls;
  };
  std::vector<std::vector<int>> in_labels;
  std::map<int, int64_t> size;
  std::map<int, int> count;
  for (size_t i = 0; i < operands.size(); ++i) {
    in_labels.push_back(expand(eq.inputs[i], operands[i]->ndim() - static_cast<int>(eq.inputs[i].labels.size())));
    HG_REQUIRE(in_labels[i].size() == static_cast<size_t>(operands[i]->ndim()), "reference: rank");
    for (size_t d = 0; d < in_labels[i].size(); ++d) {
      const int64_t s = operands[i]->shape()[d];
      auto it = size.find(in_labels[i][d]);
      if (it == size.end() || it->second == 1) size[in_labels[i][d]] = s;
      ++count[in_labels[i][d]];
    }
  }
  std::vector<int> out_labels;
  if (eq.explicit_output) {
    out_labels = expand(eq.output, ell);
  } else {
    for (int j = 0; j < ell; ++j) out_labels.push_back(100 + j);
    for (auto [l, c] : count)
      if (l < 100 && c == 1) out_labels.push_back(l);
  }
  std::vector<int> all = out_labels;  // output labels first, then the summed ones
  for (auto [l, s] : size)
    if (std::find(all.begin(), all.end(), l) == all.end()) all.push_back(l);

  ReferenceResult r;
  int64_t out_n = 1;
  for (int l : out_labels) {
    r.shape.push_back(size[l]);
    out_n *= size[l];
  }
  r.values.assign(out_n, 0.0);
  int64_t total = 1;
  for (int l : all) total *= size[l];
  std::vector<int64_t> idx(all.size());
  for (int64_t flat = 0; flat < total; ++flat) {
    int64_t rem = flat;
    for (int d = static_cast<int>(all.size()) - 1; d >= 0; --d) {
      idx[d] = rem % size[all[d]];
      rem /= size[all[d]];
    }
    auto value_of = [&](int l) { return idx[std::find(all.begin(), all.end(), l) - all.begin()]; };
    double prod = 1.0;
    for (size_t i = 0; i < operands.size(); ++i) {
      const Shape& sh = operands[i]->shape();
      int64_t off = 0;
      for (size_t d = 0; d < sh.size(); ++d)
        off = off * sh[d] + (sh[d] == 1 ? 0 : value_of(in_labels[i][d]));  // size 1 broadcasts
      prod *= operands[i]->data<float>()[off];
    }
    int64_t out_off = 0;
    for (size_t d = 0; d < out_labels.size(); ++d) out_off = out_off * size[out_labels[d]] + idx[d];
    r.values[out_off] += prod;
  }
  return r;
}

double relative_error(const std::vector<float>& got, const std::vector<double>& want) {
  if (got.size() != want.size()) return INFINITY;
  double scale = 1e-30, err = 0;
  for (size_t i = 0; i < want.size(); ++i) {
    scale = std::max(scale, std::fabs(want[i]));
    const double e = std::fabs(static_cast<double>(got[i]) - want[i]);
    if (std::isnan(e)) return INFINITY;
    err = std::max(err, e);
  }
  return err / scale;
}

}  // namespace handgrad
