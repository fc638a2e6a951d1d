// Every CPU kernel against a naive float64 loop, on random shapes (odd sizes, size 1, empty).
#include <gtest/gtest.h>

#include <omp.h>

#include <algorithm>
#include <mutex>
#include <numeric>

#include "host/einsum_ops.h"
#include "kernels/cpu_parallel.h"
#include "kernels/einsum/elementwise.h"
#include "kernels/einsum/gemm.h"
#include "kernels/einsum/reduce.h"
#include "kernels/philox.h"
#include "kernels/einsum/strided_copy.h"
#include "test_util.h"

using namespace handgrad;
using test::poisoned;
using test::random_tensor;
using test::rel_err;

TEST(CpuKernels, ParallelRangesCoverOnceAndBalance) {
  const int saved = omp_get_max_threads();
  omp_set_num_threads(2);
  struct Case { int64_t n, grain, align; std::vector<std::pair<int64_t, int64_t>> want; };
  const Case cases[] = {
      {4, 1, 1, {{0, 2}, {2, 4}}},                    // 4 slices: 2 each (align 16 gave all 4 to one thread)
      {5, 1, 1, {{0, 3}, {3, 5}}},
      {100, 16, 16, {{0, 64}, {64, 100}}},            // floats: boundaries stay multiples of 16
      {3, 4, 1, {{0, 3}}},                            // below the grain: one range, the caller's thread
      {0, 1, 1, {}},
  };
  for (const Case& c : cases) {
    std::mutex m;
    std::vector<std::pair<int64_t, int64_t>> got;
    cpu::parallel_ranges(c.n, c.grain, [&](int64_t b, int64_t e) {
      std::lock_guard<std::mutex> lock(m);
      got.emplace_back(b, e);
    }, c.align);
    std::sort(got.begin(), got.end());
    EXPECT_EQ(got, c.want) << "n " << c.n << " grain " << c.grain << " align " << c.align;
  }
  omp_set_num_threads(saved);
}

TEST(CpuKernels, Mul) {
  // 2^23 + 3: a 96 MB working set, streamed past the cache on machines with a smaller last-level
  // cache, with a ragged tail; `shift` 1 puts the output off its 32-byte alignment (a view).
  for (int64_t n : {0, 1, 3, 17, 1000, 70001, (1 << 23) + 3}) {
    for (int64_t shift : {0, 1}) {
      Tensor a = random_tensor({n}, 1), b = random_tensor({n}, 2), out = poisoned({n + shift});
      cpu::mul(out.data<float>() + shift, a.data<float>(), b.data<float>(), n);
      std::vector<double> want(n);
      for (int64_t i = 0; i < n; ++i) want[i] = double(a.data<float>()[i]) * b.data<float>()[i];
      std::vector<float> got = out.to_vector();
      EXPECT_LT(rel_err(std::vector<float>(got.begin() + shift, got.end()), want), 1e-7) << n << " " << shift;
    }
  }
}

TEST(CpuKernels, MulBroadcast) {
  // out[i,j,k] = a[i,0,k] * b[j,k] (a broadcasts over j, b over i).
  for (auto [I, J, K] : {std::tuple{3, 4, 5}, {1, 7, 1}, {5, 1, 33}, {2, 0, 3}}) {
    Tensor a = random_tensor({I, 1, K}, 3), b = random_tensor({J, K}, 4);
    Tensor out = ops::mul_broadcast(a, {K, 0, 1}, b, {0, K, 1}, {I, J, K});
    std::vector<double> want;
    for (int i = 0; i < I; ++i)
      for (int j = 0; j < J; ++j)
        for (int k = 0; k < K; ++k)
          want.push_back(double(a.data<float>()[i * K + k]) * b.data<float>()[j * K + k]);
    EXPECT_LT(rel_err(out.to_vector(), want), 1e-7);
  }
}

TEST(CpuKernels, SumMiddle) {
  std::vector<std::tuple<int, int, int>> shapes = {{1, 1, 1},      {3, 5, 7},         {2, 1000, 1},   {1, 3, 2049},
                                                   {4, 0, 3},      {0, 3, 3},         {64, 33, 3},    {1, 100000, 1},
                                                   {262144, 3, 1}, {100000, 2, 2},    {9, 1, 16},     {3, 1000, 5},
                                                   {5, 77, 32},    {4096, 1024, 1}};
  // Every slice shape the tiny path compiles separately (R x inner <= 16), ragged outer counts.
  for (int I = 1; I <= 16; ++I)
    for (int R = 1; R * I <= 16; ++R) shapes.emplace_back(4099 + R, R, I);
  for (auto [O, R, I] : shapes) {
    Tensor in = random_tensor({O, R, I}, 5), out = poisoned({O, I});
    cpu::sum_middle(out.data<float>(), in.data<float>(), O, R, I);
    std::vector<double> want(size_t(O) * I, 0.0);
    for (int o = 0; o < O; ++o)
      for (int r = 0; r < R; ++r)
        for (int i = 0; i < I; ++i) want[size_t(o) * I + i] += in.data<float>()[(size_t(o) * R + r) * I + i];
    EXPECT_LT(rel_err(out.to_vector(), want), 1e-5) << O << "x" << R << "x" << I;
  }
}

TEST(CpuKernels, SumAxesAnySet) {
  Tensor in = random_tensor({3, 4, 5, 6}, 6);
  const float* p = in.data<float>();
  Tensor out = ops::sum_axes(in, {0, 2});  // -> [4, 6]
  ASSERT_EQ(out.shape(), (Shape{4, 6}));
  std::vector<double> want(24, 0.0);
  for (int a = 0; a < 3; ++a)
    for (int b = 0; b < 4; ++b)
      for (int c = 0; c < 5; ++c)
        for (int d = 0; d < 6; ++d) want[b * 6 + d] += p[((a * 4 + b) * 5 + c) * 6 + d];
  EXPECT_LT(rel_err(out.to_vector(), want), 1e-6);
}

TEST(CpuKernels, PermuteAllOrdersOfRank4) {
  const Shape shape = {3, 1, 5, 7};
  Tensor in = random_tensor(shape, 7);
  std::vector<int> perm = {0, 1, 2, 3};
  do {
    Tensor out = ops::permute(in, perm);
    const Shape st = contiguous_strides(shape);
    std::vector<double> want;
    Shape os;
    for (int p : perm) os.push_back(shape[p]);
    ASSERT_EQ(out.shape(), os);
    for (int64_t i = 0; i < os[0]; ++i)
      for (int64_t j = 0; j < os[1]; ++j)
        for (int64_t k = 0; k < os[2]; ++k)
          for (int64_t l = 0; l < os[3]; ++l)
            want.push_back(in.data<float>()[i * st[perm[0]] + j * st[perm[1]] + k * st[perm[2]] + l * st[perm[3]]]);
    EXPECT_EQ(rel_err(out.to_vector(), want), 0.0);
  } while (std::next_permutation(perm.begin(), perm.end()));
}

TEST(CpuKernels, StridedCopyDiagonalAndBroadcast) {
  Tensor in = random_tensor({4, 4}, 8);
  Tensor diag = ops::strided_copy(in, {4}, {5});
  for (int i = 0; i < 4; ++i) EXPECT_EQ(diag.to_vector()[i], in.data<float>()[i * 5]);
  Tensor row = random_tensor({3}, 9);
  Tensor rep = ops::strided_copy(row, {2, 3}, {0, 1});
  for (int i = 0; i < 6; ++i) EXPECT_EQ(rep.to_vector()[i], row.data<float>()[i % 3]);
}

// C = op(A) op(B) in float64, straight from the definition.
std::vector<double> gemm_reference(const Tensor& A, const Tensor& B, const GemmShape& s) {
  std::vector<double> C(size_t(s.batch * s.M * s.N), 0.0);
  const float* a = A.data<float>();
  const float* b = B.data<float>();
  for (int64_t bt = 0; bt < s.batch; ++bt)
    for (int64_t i = 0; i < s.M; ++i)
      for (int64_t j = 0; j < s.N; ++j) {
        double acc = 0;
        for (int64_t k = 0; k < s.K; ++k) {
          const double x = s.trans_a ? a[bt * s.stride_a + k * s.lda + i] : a[bt * s.stride_a + i * s.lda + k];
          const double y = s.trans_b ? b[bt * s.stride_b + j * s.ldb + k] : b[bt * s.stride_b + k * s.ldb + j];
          acc += x * y;
        }
        C[(bt * s.M + i) * s.N + j] = acc;
      }
  return C;
}

// A random GEMM problem; lda/ldb padded on odd cases, batch stride 0 on some.
GemmShape random_gemm(uint64_t seed, int64_t max_dim) {
  const Philox rng(seed, 1);
  GemmShape s;
  s.batch = 1 + int64_t(rng.uniform_int(0, 3));
  s.M = 1 + int64_t(rng.uniform_int(1, max_dim));
  s.N = 1 + int64_t(rng.uniform_int(2, max_dim));
  s.K = int64_t(rng.uniform_int(3, max_dim + 1));
  s.trans_a = rng.uniform_int(4, 2);
  s.trans_b = rng.uniform_int(5, 2);
  const int64_t pad = int64_t(rng.uniform_int(6, 3));
  s.lda = std::max<int64_t>(1, s.trans_a ? s.M : s.K) + pad;
  s.ldb = std::max<int64_t>(1, s.trans_b ? s.K : s.N) + pad;
  s.stride_a = (s.trans_a ? s.K : s.M) * s.lda;
  s.stride_b = rng.uniform_int(7, 4) == 0 ? 0 : (s.trans_b ? s.N : s.K) * s.ldb;
  return s;
}

TEST(CpuKernels, GemmAllTransposesRandomShapes) {
  for (uint64_t seed = 0; seed < 40; ++seed) {
    const GemmShape s = random_gemm(seed, 70);
    Tensor A = random_tensor({s.batch * (s.trans_a ? s.K : s.M) * s.lda + 1}, seed);
    Tensor B = random_tensor({std::max<int64_t>(1, s.stride_b) * s.batch + (s.trans_b ? s.N : s.K) * s.ldb}, seed + 100);
    Tensor C = poisoned({s.batch, s.M, s.N});
    ops::gemm_batched_into(C, A, B, s);
    EXPECT_LT(rel_err(C.to_vector(), gemm_reference(A, B, s)), 1e-5)
        << "seed " << seed << " M=" << s.M << " N=" << s.N << " K=" << s.K;
  }
}
