// Every CUDA kernel against its CPU twin, on random inputs, into NaN-poisoned outputs.
// Skipped, with the reason, where no GPU can run them.
#include <gtest/gtest.h>

#include "einsum_cases.h"
#include "host/einsum.h"
#include "host/einsum_ops.h"
#include "host/random.h"
#include "kernels/cuda_check.h"
#include "kernels/einsum/elementwise.h"
#include "kernels/einsum/gemm.h"
#include "kernels/einsum/reduce.h"
#include "kernels/einsum/strided_copy.h"
#include "kernels/random/random.h"
#include "test_util.h"

namespace handgrad {
void PrintTo(GemmTile t, std::ostream* os) {
  *os << (t == GemmTile::Large ? "Large" : t == GemmTile::Small ? "Small" : "Narrow");
}
// Path names in assertion messages (gtest would print the enum's bytes).
void PrintTo(StridedCopyKernel k, std::ostream* os) {
  *os << (k == StridedCopyKernel::TiledTranspose ? "TiledTranspose" : k == StridedCopyKernel::Gather32 ? "Gather32" : "Gather64");
}
}  // namespace handgrad

using namespace handgrad;
using test::poisoned;
using test::random_tensor;
using test::rel_err;

#ifdef HANDGRAD_WITH_CUDA

TEST(CudaKernels, PhiloxMatchesHost) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  const int64_t n = 100003;
  Tensor hu = Tensor::empty({n}), hn = Tensor::empty({n});
  Tensor du = poisoned({n}, Device::CUDA), dn = poisoned({n}, Device::CUDA);
  fill_uniform(hu, 5, 2, 17);
  fill_uniform(du, 5, 2, 17);
  fill_normal(hn, 5, 2, 17);
  fill_normal(dn, 5, 2, 17);
  EXPECT_EQ(du.to_vector(), hu.to_vector());  // bit-identical
  EXPECT_LT(rel_err(dn.to_vector(), hn.to_vector()), 1e-6);  // log/cos may differ in the last ulp
  Tensor hi = Tensor::empty({n}, Device::CPU, DType::I64), di = Tensor::empty({n}, Device::CUDA, DType::I64);
  fill_uniform_int(hi, 1000003, 9);
  fill_uniform_int(di, 1000003, 9);
  Tensor di_host = di.to(Device::CPU);
  for (int64_t i = 0; i < n; ++i) ASSERT_EQ(di_host.data<int64_t>()[i], hi.data<int64_t>()[i]) << i;
}

TEST(CudaKernels, MulContiguousAndUnaligned) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  for (int64_t n : {1, 3, 4, 5, 1023, 1 << 20, (1 << 20) + 3}) {
    Tensor a = random_tensor({n + 1}, 1), b = random_tensor({n + 1}, 2);
    Tensor da = a.to(Device::CUDA), db = b.to(Device::CUDA);
    Tensor want = poisoned({n + 1}), got = poisoned({n + 1}, Device::CUDA);
    cpu::mul(want.data<float>(), a.data<float>(), b.data<float>(), n + 1);
    cuda::mul(got.data<float>(), da.data<float>(), db.data<float>(), n + 1);
    EXPECT_EQ(got.to_vector(), want.to_vector()) << n;
    // Offset by one float: the vector path must fall back, not fault.
    Tensor got2 = poisoned({n}, Device::CUDA);
    cuda::mul(got2.data<float>(), da.data<float>() + 1, db.data<float>() + 1, n);
    std::vector<float> w = want.to_vector();
    EXPECT_EQ(got2.to_vector(), std::vector<float>(w.begin() + 1, w.end())) << n;
  }
}

TEST(CudaKernels, SumMiddleEveryShapeFamily) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  for (auto [O, R, I] : {std::tuple{1, 1, 1}, {3, 5, 7}, {2, 1000, 1}, {1, 3, 2049}, {4, 0, 3},
                         {64, 33, 3}, {1, 1 << 20, 1}, {2, 100000, 3}, {7, 513, 257},
                         {4096, 64, 1}, {1, 1000, 4096}, {100000, 2, 2}, {3, 77777, 31},
                         {262144, 3, 1}, {70000, 1, 5}, {5, 2, 300}}) {
    Tensor in = random_tensor({O, R, I}, 5);
    Tensor din = in.to(Device::CUDA);
    Tensor want = poisoned({O, I}), got = poisoned({O, I}, Device::CUDA);
    cpu::sum_middle(want.data<float>(), in.data<float>(), O, R, I);
    ops::sum_middle_into(got, din, O, R, I);
    EXPECT_LT(rel_err(got.to_vector(), want.to_vector()), 1e-5) << O << "x" << R << "x" << I;
    // Deterministic: the same bits twice.
    Tensor again = poisoned({O, I}, Device::CUDA);
    ops::sum_middle_into(again, din, O, R, I);
    EXPECT_EQ(again.to_vector(), got.to_vector());
  }
}

TEST(CudaKernels, StridedCopyPermutesDiagonalsBroadcasts) {
  using K = StridedCopyKernel;
  struct Case {
    Shape in_shape, out_shape, strides;
    K kernel;  // the path the case is there to cover
  };
  const std::vector<Case> cases = {
      {{33, 65}, {65, 33}, {1, 65}, K::TiledTranspose},                        // 2-D transpose, odd sizes
      {{4, 40, 50}, {50, 4, 40}, {1, 2000, 50}, K::TiledTranspose},            // with a rest axis
      {{3, 9, 10, 11}, {11, 10, 9, 3}, {1, 11, 110, 990}, K::Gather32},        // full reversal, last axis 3
      {{3, 9, 10, 11}, {11, 10, 3, 9}, {1, 11, 990, 110}, K::TiledTranspose},  // reversal but 2 axes
      {{5, 6, 7}, {6, 5, 7}, {7, 42, 1}, K::Gather32},                         // last axis stays
      {{16, 16}, {16}, {17}, K::Gather32},                                     // diagonal
      {{7}, {5, 7}, {0, 1}, K::Gather32},                                      // broadcast
      {{1000, 3}, {3, 1000}, {1, 3}, K::Gather32},                             // thin transpose
      {{1000, 8}, {8, 1000}, {1, 8}, K::TiledTranspose},                       // at the threshold
  };
  // The path each shape takes is asserted before anything runs (on any machine): a change to
  // the choice shows up here, not as a path that quietly stopped being tested.
  for (const Case& c : cases)
    EXPECT_EQ(strided_copy_path(make_strided_view<1>(c.out_shape, {c.strides})).kernel, c.kernel)
        << shape_str(c.in_shape) << " -> " << shape_str(c.out_shape);
  HG_SKIP_UNLESS_KERNELS_RUN();
  for (const Case& c : cases) {
    Tensor in = random_tensor(c.in_shape, 11);
    Tensor want = ops::strided_copy(in, c.out_shape, c.strides);
    Tensor got = ops::strided_copy(in.to(Device::CUDA), c.out_shape, c.strides);
    EXPECT_EQ(got.to_vector(), want.to_vector()) << shape_str(c.in_shape);
  }
}

// Shapes that hit every tile configuration and every edge: multiples of the tile, one more,
// one less, primes, K not a multiple of 16, tall-skinny, wide, batched with shared B.
TEST(CudaKernels, GemmAgainstCpuTwinAndCublas) {
  // The tiles these shapes take on an H100/H200 (132 SMs), pinned before anything runs: each
  // configuration is reached, and a batch of tiny products never gets the 128x128 tile.
  const auto tile = [](int64_t batch, int64_t M, int64_t N) {
    GemmShape s;
    s.batch = batch, s.M = M, s.N = N, s.K = 16;
    return gemm_tile_for(s, 132);
  };
  EXPECT_EQ(tile(1, 2048, 2048), GemmTile::Large);
  EXPECT_EQ(tile(1, 257, 255), GemmTile::Small);    // 6 large blocks: too few for 132 SMs
  EXPECT_EQ(tile(1, 1000, 4), GemmTile::Narrow);
  EXPECT_EQ(tile(70000, 3, 2), GemmTile::Small);    // tiny batched products (the 128x128 tile before)
  EXPECT_EQ(tile(200, 64, 64), GemmTile::Small);    // at the threshold
  EXPECT_EQ(tile(200, 65, 200), GemmTile::Large);   // wider than 64 both ways, enough blocks
  EXPECT_EQ(tile(1, 64, 10), GemmTile::Small);      // the ResNet's fc at batch 64
  HG_SKIP_UNLESS_KERNELS_RUN();
  std::vector<GemmShape> shapes;
  for (auto [M, N, K] : {std::tuple{128, 128, 16}, {129, 127, 17}, {1, 1, 1}, {3, 5, 7},
                         {1000, 4, 64}, {4, 1000, 64}, {257, 255, 300}, {2048, 2048, 64},
                         {65, 33, 0}, {31, 64, 1}})
    for (int t = 0; t < 4; ++t) {
      GemmShape s;
      s.batch = (M * N < 100000) ? 3 : 1;
      s.M = M, s.N = N, s.K = K;
      s.trans_a = t & 1, s.trans_b = t & 2;
      s.lda = std::max<int64_t>(1, s.trans_a ? M : K) + (t == 3 ? 1 : 0);  // unaligned rows too
      s.ldb = std::max<int64_t>(1, s.trans_b ? K : N);
      s.stride_a = (s.trans_a ? K : M) * s.lda;
      s.stride_b = (t == 2) ? 0 : (s.trans_b ? N : K) * s.ldb;
      shapes.push_back(s);
    }
  for (const GemmShape& s : shapes) {
    Tensor A = random_tensor({s.batch * s.stride_a + 4}, 1);
    Tensor B = random_tensor({std::max<int64_t>(1, s.batch * s.stride_b) + (s.trans_b ? s.N : s.K) * s.ldb}, 2);
    Tensor dA = A.to(Device::CUDA), dB = B.to(Device::CUDA);
    Tensor want = poisoned({s.batch, s.M, s.N});
    ops::gemm_batched_into(want, A, B, s);
    Tensor got = poisoned({s.batch, s.M, s.N}, Device::CUDA);
    ops::gemm_batched_into(got, dA, dB, s);
    const std::string what = cat("M=", s.M, " N=", s.N, " K=", s.K, " ta=", s.trans_a, " tb=", s.trans_b);
    EXPECT_LT(rel_err(got.to_vector(), want.to_vector()), 1e-5) << what;
    if (s.K > 0 && cuda_available()) {  // cuBLAS: on a GPU only (not in the SIMT emulator)
      Tensor ref = poisoned({s.batch, s.M, s.N}, Device::CUDA);
      cuda::gemm_batched_cublas(ref.data<float>(), dA.data<float>(), dB.data<float>(), s);
      EXPECT_LT(rel_err(got.to_vector(), ref.to_vector()), 1e-5) << what << " vs cuBLAS";
    }
  }
}

namespace {
// Each case on the GPU against the CPU, inputs drawn from seeds after `seed`.
void expect_gpu_einsum_matches_cpu(const std::vector<test::EinsumCase>& cases, uint64_t seed) {
  for (const test::EinsumCase& c : cases) {
    std::vector<Tensor> host, dev;
    for (const Shape& s : c.shapes) {
      host.push_back(random_tensor(s, ++seed));
      dev.push_back(host.back().to(Device::CUDA));
    }
    std::vector<const Tensor*> hp, dp;
    for (size_t i = 0; i < host.size(); ++i) hp.push_back(&host[i]), dp.push_back(&dev[i]);
    Tensor want = einsum(c.equation, hp);
    Tensor got = einsum(c.equation, dp);
    ASSERT_EQ(got.device(), Device::CUDA);
    ASSERT_EQ(got.shape(), want.shape()) << c.equation;
    EXPECT_LT(rel_err(got.to_vector(), want.to_vector()), 1e-5) << c.equation;
  }
}
}  // namespace

TEST(CudaKernels, EinsumMatchesCpuOnEveryCase) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  std::vector<test::EinsumCase> cases = test::fixed_einsum_cases();
  for (uint64_t seed = 0; seed < 200; ++seed) cases.push_back(test::random_einsum_case(seed));
  cases.push_back({"abcd,abcd->abcd", {{8, 16, 64, 129}, {8, 16, 64, 129}}});
  cases.push_back({"abcd,ed->abce", {{4, 8, 64, 96}, {300, 96}}});
  cases.push_back({"abcd->abd", {{4, 8, 4096, 3}}});
  expect_gpu_einsum_matches_cpu(cases, 0);
}

// Tensors beyond the old 8-dim cap, up to kMaxDims, and strided views of 20 dims: the kernels'
// parameter structs are sized for them.
TEST(CudaKernels, EinsumBeyondEightDims) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  expect_gpu_einsum_matches_cpu(test::many_dims_einsum_cases(), 900);
}

// Grid dimensions past the y and z limit (kMaxGridYZ: 65535 on a GPU, 512 on the emulator): the
// launchers cap the grid and the kernels stride.
TEST(CudaKernels, GridStridesPastTheYAndZLimit) {
  const int64_t n = kMaxGridYZ + kMaxGridYZ / 14 + 1;  // 70217 on a GPU
  // A transpose of the last two axes (8 and 9 long: the tiled path) under an n-long rest axis,
  // which the tiled kernel walks in gridDim.z. Pinned to that path before it runs.
  const Shape t_shape = {n, 9, 8}, t_strides = {72, 1, 9};
  ASSERT_EQ(strided_copy_path(make_strided_view<1>(t_shape, {t_strides})).kernel, StridedCopyKernel::TiledTranspose);
  HG_SKIP_UNLESS_KERNELS_RUN();
  GemmShape s;  // n tiny products: the batch walks gridDim.z
  s.batch = n, s.M = 3, s.N = 2, s.K = 5, s.lda = 5, s.ldb = 2, s.stride_a = 15, s.stride_b = 10;
  Tensor A = random_tensor({s.batch * 15}, 3), B = random_tensor({s.batch * 10}, 4);
  Tensor want = poisoned({s.batch, 3, 2}), got = poisoned({s.batch, 3, 2}, Device::CUDA);
  ops::gemm_batched_into(want, A, B, s);
  ops::gemm_batched_into(got, A.to(Device::CUDA), B.to(Device::CUDA), s);
  EXPECT_LT(rel_err(got.to_vector(), want.to_vector()), 1e-5);
  Tensor in = random_tensor({n, 8, 9}, 5);
  Tensor t_want = ops::strided_copy(in, t_shape, t_strides);
  Tensor t_got = ops::strided_copy(in.to(Device::CUDA), t_shape, t_strides);
  EXPECT_EQ(t_got.to_vector(), t_want.to_vector());
}

// Element counts past 2^31: 32-bit index math would wrap. Checked where it would go wrong (around
// 2^31 and at the end) against products computed on the host from the same device inputs.
TEST(CudaKernels, IndexPathsBeyond2To31Elements) {
  HG_SKIP_UNLESS_KERNELS_RUN();
  size_t free_bytes = 0, total = 0;
  CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total));
  const int64_t n = (int64_t(1) << 31) + 4099;
  if (free_bytes < 3 * sizeof(float) * size_t(n) + (size_t(1) << 30))
    GTEST_SKIP() << "needs 26 GB of free GPU memory, " << (free_bytes >> 30) << " GB free";
  Tensor a = Tensor::empty({n}, Device::CUDA), b = Tensor::empty({n}, Device::CUDA), y = Tensor::empty({n}, Device::CUDA);
  cuda::fill_uniform(a.data<float>(), n, 1, 1, 0);
  cuda::fill_uniform(b.data<float>(), n, 1, 2, 0);
  CUDA_CHECK(cudaMemset(y.raw(), 0xff, sizeof(float) * n));  // NaN everywhere: each output must be written
  cuda::mul(y.data<float>(), a.data<float>(), b.data<float>(), n);
  for (int64_t at : {int64_t(0), (int64_t(1) << 31) - 2048, n - 4096}) {
    std::vector<float> ha(4096), hb(4096), hy(4096);
    copy_bytes(ha.data(), Device::CPU, a.data<float>() + at, Device::CUDA, sizeof(float) * 4096);
    copy_bytes(hb.data(), Device::CPU, b.data<float>() + at, Device::CUDA, sizeof(float) * 4096);
    copy_bytes(hy.data(), Device::CPU, y.data<float>() + at, Device::CUDA, sizeof(float) * 4096);
    for (int64_t i = 0; i < 4096; ++i) ASSERT_EQ(hy[i], ha[i] * hb[i]) << "element " << at + i;
  }
}

#else

TEST(CudaKernels, NotBuilt) { GTEST_SKIP() << "CUDA tests skipped: this is a CPU-only build"; }

#endif
