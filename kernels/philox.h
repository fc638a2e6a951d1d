// Philox-4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC'11): a
// counter-based RNG. A (seed, stream) pair is the key; element i of a stream is a pure function
// of (key, i), so host and device code produce bit-identical streams in any order and any
// parallel split. The same header compiles for both.
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace handgrad {

struct PhiloxState {
  uint32_t x[4];
};

class Philox {
 public:
  HG_HD Philox(uint64_t seed, uint64_t stream = 0) : seed_(seed), stream_(stream) {}

  // The raw block of 4 words at `counter`.
  HG_HD PhiloxState block(uint64_t counter) const {
    PhiloxState c{{static_cast<uint32_t>(counter), static_cast<uint32_t>(counter >> 32),
                   static_cast<uint32_t>(stream_), static_cast<uint32_t>(stream_ >> 32)}};
    uint32_t k0 = static_cast<uint32_t>(seed_), k1 = static_cast<uint32_t>(seed_ >> 32);
    for (int round = 0; round < 10; ++round) {
      c = single_round(c, k0, k1);
      k0 += 0x9E3779B9u;  // Weyl key schedule
      k1 += 0xBB67AE85u;
    }
    return c;
  }

  // Uniform float in [0, 1): 24 random bits, exactly representable.
  HG_HD float uniform(uint64_t i) const {
    PhiloxState b = block(i >> 2);
    return to_unit(b.x[i & 3]);
  }

  // Standard normal N(0, 1) by Box-Muller; element i uses half of block i / 2.
  HG_HD float normal(uint64_t i) const {
    PhiloxState b = block(i >> 1);
    uint32_t a = (i & 1) ? b.x[2] : b.x[0];
    uint32_t c = (i & 1) ? b.x[3] : b.x[1];
    // u1 in (0, 1] so log(u1) is finite.
    float u1 = (static_cast<float>(a >> 8) + 1.0f) * (1.0f / 16777216.0f);
    float u2 = to_unit(c);
    // Double precision inside, so host and device round the same way to float.
    double r = sqrt_(-2.0 * log_(static_cast<double>(u1)));
    return static_cast<float>(r * cos_(6.283185307179586 * static_cast<double>(u2)));
  }

  // Uniform integer in [0, n): the high 64 bits of a 64x64-bit product of 64 random bits and n
  // (bias at most n / 2^64). Element i uses half of block i / 2.
  HG_HD uint64_t uniform_int(uint64_t i, uint64_t n) const {
    PhiloxState b = block(i >> 1);
    uint64_t r = (i & 1) ? (static_cast<uint64_t>(b.x[3]) << 32 | b.x[2])
                         : (static_cast<uint64_t>(b.x[1]) << 32 | b.x[0]);
    return mulhi64(r, n);
  }

 private:
  HG_HD static float to_unit(uint32_t w) {
    return static_cast<float>(w >> 8) * (1.0f / 16777216.0f);
  }
  HG_HD static PhiloxState single_round(PhiloxState c, uint32_t k0, uint32_t k1) {
    const uint64_t p0 = static_cast<uint64_t>(0xD2511F53u) * c.x[0];
    const uint64_t p1 = static_cast<uint64_t>(0xCD9E8D57u) * c.x[2];
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    return PhiloxState{{hi1 ^ c.x[1] ^ k0, lo1, hi0 ^ c.x[3] ^ k1, lo0}};
  }
  HG_HD static uint64_t mulhi64(uint64_t a, uint64_t b) {
#if defined(__CUDA_ARCH__) || defined(HG_SIMT_DEVICE_CODE)
    return __umul64hi(a, b);
#else
    return static_cast<uint64_t>((static_cast<unsigned __int128>(a) * b) >> 64);
#endif
  }
  HG_HD static double log_(double x) {
#if defined(__CUDA_ARCH__) || defined(HG_SIMT_DEVICE_CODE)
    return ::log(x);
#else
    return __builtin_log(x);
#endif
  }
  HG_HD static double sqrt_(double x) {
#if defined(__CUDA_ARCH__) || defined(HG_SIMT_DEVICE_CODE)
    return ::sqrt(x);
#else
    return __builtin_sqrt(x);
#endif
  }
  HG_HD static double cos_(double x) {
#if defined(__CUDA_ARCH__) || defined(HG_SIMT_DEVICE_CODE)
    return ::cos(x);
#else
    return __builtin_cos(x);
#endif
  }

  uint64_t seed_;
  uint64_t stream_;
};

}  // namespace handgrad
