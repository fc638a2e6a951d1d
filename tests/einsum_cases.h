// Einsum equations and shapes shared by the CPU and CUDA einsum tests.
#pragma once
#include <map>
#include <string>
#include <vector>

#include "host/einsum.h"
#include "kernels/philox.h"
#include "host/tensor.h"

namespace handgrad::test {

struct EinsumCase {
  std::string equation;
  std::vector<Shape> shapes;
};

// Fixed cases: the course ops, every lowering path, broadcasting, ellipsis, empty dims.
inline std::vector<EinsumCase> fixed_einsum_cases() {
  return {
      {"abcd,abcd->abcd", {{2, 3, 4, 5}, {2, 3, 4, 5}}},
      {"abcd,ed->abce", {{2, 3, 4, 5}, {6, 5}}},
      {"abcd->abd", {{2, 3, 4, 5}}},
      {"abcd->abd", {{3, 2, 1000, 1}}},
      {"abcd->abd", {{1, 1, 7, 3}}},
      {"abcd,ed->abce", {{1, 1, 1, 1}, {1, 1}}},
      {"abcd,ed->abce", {{3, 5, 7, 9}, {11, 9}}},
      {"ij,jk->ik", {{7, 5}, {5, 3}}},
      {"ij,jk", {{7, 5}, {5, 3}}},
      {"ji,jk->ik", {{5, 7}, {5, 3}}},
      {"ij,kj->ik", {{7, 5}, {3, 5}}},
      {"ji,kj->ki", {{5, 7}, {3, 5}}},
      {"bij,bjk->bik", {{4, 3, 5}, {4, 5, 2}}},
      {"bij,jk->bik", {{4, 3, 5}, {5, 2}}},
      {"ibj,bjk->bki", {{3, 4, 5}, {4, 5, 2}}},
      {"ii->i", {{5, 5}}},
      {"ii", {{5, 5}}},
      {"iij->ij", {{3, 3, 4}}},
      {"ij->ji", {{3, 4}}},
      {"abc->cba", {{3, 4, 5}}},
      {"...ij->...ji", {{2, 3, 4}}},
      {"i,i->", {{17}, {17}}},
      {"i,j->ij", {{3}, {4}}},
      {"ij,ij->", {{3, 4}, {3, 4}}},
      {"ijk->", {{3, 4, 5}}},
      {"ab,ab,ab->ab", {{3, 4}, {3, 4}, {3, 4}}},
      {"abc,cd,de->abe", {{2, 3, 4}, {4, 5}, {5, 6}}},
      {"ab,bc,ca->", {{3, 4}, {4, 5}, {5, 3}}},
      {"Ab,bC->AC", {{2, 3}, {3, 4}}},
      {"a...b,b->a...", {{2, 3, 4}, {4}}},
      {"...,...->...", {{2, 1, 3}, {4, 1}}},
      {"ij,ij->ij", {{1, 3}, {2, 3}}},
      {"ij,jk", {{2, 1}, {3, 4}}},
      {"bij,bjk->bik", {{1, 3, 5}, {4, 5, 2}}},
      {"ij,jk->ik", {{2, 0}, {0, 3}}},
      {"ij,jk->ik", {{0, 3}, {3, 2}}},
      {"i->", {{0}}},
      {"ij->j", {{1, 5}}},
      {"ijk,ikl->jl", {{3, 4, 5}, {3, 5, 2}}},
      {"i,i,i->i", {{1}, {1}, {3}}},
      {"bik,bkj,b->bij", {{1, 2, 3}, {1, 3, 2}, {4}}},
  };
}

// Random equations: 1..3 operands over up to 5 labels, random sizes (1..7), explicit or
// implicit output.
inline EinsumCase random_einsum_case(uint64_t seed) {
  const Philox rng(seed, 42);
  uint64_t draw = 0;
  auto next = [&](uint64_t n) { return rng.uniform_int(draw++, n); };
  const int n_labels = 1 + int(next(5));
  std::vector<int64_t> sizes;
  for (int l = 0; l < n_labels; ++l) sizes.push_back(1 + int64_t(next(7)));
  const int n_ops = 1 + int(next(3));
  EinsumCase c;
  std::vector<int> used(n_labels, 0);
  for (int o = 0; o < n_ops; ++o) {
    const int rank = 1 + int(next(4));
    std::string term;
    Shape shape;
    for (int d = 0; d < rank; ++d) {
      int l = int(next(n_labels));
      if (term.find(char('a' + l)) != std::string::npos) l = int(next(n_labels));  // few repeats
      term += char('a' + l);
      shape.push_back(sizes[l]);
      used[l] = 1;
    }
    c.equation += (o ? "," : "") + term;
    c.shapes.push_back(shape);
  }
  if (next(3) != 0) {  // explicit output: a random subset of the used labels, shuffled
    std::string out;
    for (int l = 0; l < n_labels; ++l)
      if (used[l] && next(2)) out += char('a' + l);
    for (size_t i = out.size(); i > 1; --i) std::swap(out[i - 1], out[next(i)]);
    c.equation += "->" + out;
  }
  return c;
}

// Beyond the 8 dims tensors used to be capped at: NumPy's singleton broadcasting over an 11-dim
// ellipsis, a 7-operand equation whose left-to-right intermediate has 9 labels, all 52 letters,
// a 64-dim operand, and a permute whose strided view keeps 20 dims (nothing merges).
inline std::vector<EinsumCase> many_dims_einsum_cases() {
  std::vector<EinsumCase> c;
  c.push_back({"...ij,...jk->...ik", {{2, 1, 3, 1, 2, 1, 1, 2, 1, 3, 4}, {1, 2, 1, 1, 1, 2, 1, 1, 1, 4, 2}}});
  // a=2 b=3 c=2 d=2 e=2 f=3 g=2 h=2 i=2 j=2; implicit output "de"
  c.push_back({"acdf,jbje,gihb,hfac,gfac,gifabc,hfac",
               {{2, 2, 2, 3}, {2, 3, 2, 2}, {2, 2, 2, 3}, {2, 3, 2, 2}, {2, 3, 2, 2}, {2, 2, 3, 2, 3, 2}, {2, 3, 2, 2}}});
  std::string letters, reversed;
  Shape all;
  for (int l = 0; l < 52; ++l) {
    letters += static_cast<char>(l < 26 ? 'a' + l : 'A' + l - 26);
    all.push_back(l % 9 == 0 ? 2 : 1);  // 6 dims of 2, the rest 1
  }
  reversed.assign(letters.rbegin(), letters.rend());
  c.push_back({letters + "->" + reversed, {all}});
  c.push_back({letters + "," + letters.substr(0, 10) + "->" + letters.substr(5, 30), {all, Shape(all.begin(), all.begin() + 10)}});
  Shape wide(kMaxDims, 1);
  wide.front() = 2, wide.back() = 3;
  c.push_back({"...i,i->...", {wide, {3}}});
  const std::string twenty = letters.substr(0, 20);
  c.push_back({twenty + "->" + std::string(twenty.rbegin(), twenty.rend()), {Shape(20, 2)}});
  return c;
}

}  // namespace handgrad::test
