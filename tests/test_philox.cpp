#include <gtest/gtest.h>

#include <cmath>

#include "host/random.h"
#include "kernels/philox.h"
#include "kernels/random/random.h"
#include "test_util.h"

using namespace handgrad;

// Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors):
// counter words, key words -> output words.
TEST(Philox, KnownAnswers) {
  struct Kat {
    uint32_t ctr[4], key[2], out[4];
  } kats[] = {
      {{0, 0, 0, 0}, {0, 0}, {0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}},
      {{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff},
       {0xffffffff, 0xffffffff},
       {0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}},
      {{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344},
       {0xa4093822, 0x299f31d0},
       {0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}},
  };
  for (const Kat& k : kats) {
    const uint64_t seed = uint64_t(k.key[1]) << 32 | k.key[0];
    const uint64_t stream = uint64_t(k.ctr[3]) << 32 | k.ctr[2];
    const uint64_t counter = uint64_t(k.ctr[1]) << 32 | k.ctr[0];
    const PhiloxState s = Philox(seed, stream).block(counter);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(s.x[i], k.out[i]) << "word " << i;
  }
}

TEST(Philox, UniformAndNormalMoments) {
  const int64_t n = 200000;
  Tensor u = Tensor::empty({n}), z = Tensor::empty({n});
  fill_uniform(u, 7);
  fill_normal(z, 7);
  double su = 0, sz = 0, sz2 = 0;
  for (float v : u.to_vector()) {
    ASSERT_GE(v, 0.f);
    ASSERT_LT(v, 1.f);
    su += v;
  }
  for (float v : z.to_vector()) {
    ASSERT_TRUE(std::isfinite(v));
    sz += v;
    sz2 += double(v) * v;
  }
  EXPECT_NEAR(su / n, 0.5, 0.005);
  EXPECT_NEAR(sz / n, 0.0, 0.01);
  EXPECT_NEAR(sz2 / n, 1.0, 0.02);
}

TEST(Philox, UniformIntInRangeAndCoversIt) {
  Tensor t = Tensor::empty({50000}, Device::CPU, DType::I64);
  fill_uniform_int(t, 10, 3);
  std::vector<int> hist(10, 0);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int64_t v = t.data<int64_t>()[i];
    ASSERT_GE(v, 0);
    ASSERT_LT(v, 10);
    ++hist[v];
  }
  for (int h : hist) EXPECT_NEAR(h, 5000, 400);
}

TEST(Philox, StreamsAndOffsetsAreIndependentOfSplitting) {
  // Element i depends only on (seed, stream, i): filling in two halves equals one fill.
  Tensor whole = Tensor::empty({1000}), a = Tensor::empty({400}), b = Tensor::empty({600});
  fill_normal(whole, 11, 5);
  fill_normal(a, 11, 5, 0);
  fill_normal(b, 11, 5, 400);
  const auto w = whole.to_vector(), va = a.to_vector(), vb = b.to_vector();
  for (int i = 0; i < 400; ++i) ASSERT_EQ(w[i], va[i]);
  for (int i = 0; i < 600; ++i) ASSERT_EQ(w[400 + i], vb[i]);
  // Another stream gives other numbers.
  Tensor other = Tensor::empty({1000});
  fill_normal(other, 11, 6);
  EXPECT_NE(other.to_vector(), w);
}
