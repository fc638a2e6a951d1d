// The choice between the tap-exact lowering and the library's convolution (conv2d_taps.h): host
// code, the same on both devices. Measured on a 2-core AVX2 EPYC against oneDNN 2.6, every ResNet18
// convolution at 28x28 (batch 16, 64), 32x32 and 64x64 (batch 16), each call starting with cold
// caches as it does in a training step (bench/RESULTS.md has the tables):
// - the dense case (2x2 and 1x1 maps) wins every direction by 1.1x to 30x (oneDNN's generic
//   path computes 9 taps for 1 to 4 useful ones);
// - forward wins up to 8x8 output maps (0.3x-0.9x of oneDNN's time at 7x7 and 4x4; even at 16x16);
//   its GEMMs' inner dimension is taps*C, long enough everywhere;
// - backward data's inner dimension is only K and its col2im adds cost: it wins on 2x2 maps
//   (0.5x-0.9x) and, at batch 64, on 4x4 (0.8x-0.9x); it loses on 7x7 (1.2x);
// - backward filter's inner dimension is N*pixels of a group: on 2x2 maps it wins at any batch
//   (0.3x-0.85x); at batch 64 it wins on 4x4 and 7x7 too (0.65x-0.85x), at batch 16 it loses
//   there (1.2x-1.7x);
// - a 1x1 kernel without padding has nothing to skip, and forward and backward data are about
//   even with the library's (0.4x-1.4x), so they stay there; its backward filter (one GEMM over
//   all pixels) wins on maps up to 8x8 (0.5x-1.0x).
//
// HANDGRAD_CONV_LOWERING=library|tap-exact forces one lowering for every shape and direction (the
// crossover measured on another machine: scripts/gpu-check.sh's bench-q3-lowering); unset or
// "auto", the rule below.
#include <cstdlib>
#include <cstring>

#include "kernels/error.h"
#include "kernels/nn/conv2d_taps.h"

namespace handgrad {

ConvLowering conv2d_lowering(const Conv2dShape& s, ConvDirection d) {
  if (const char* forced = std::getenv("HANDGRAD_CONV_LOWERING"); forced && *forced && std::strcmp(forced, "auto")) {
    if (!std::strcmp(forced, "library")) return ConvLowering::Library;
    if (!std::strcmp(forced, "tap-exact")) return ConvLowering::TapExact;
    HG_REQUIRE(false, "HANDGRAD_CONV_LOWERING must be auto, library or tap-exact, got '", forced, "'");
  }
  if (conv2d_is_dense_gemm(s)) return ConvLowering::TapExact;
  const int64_t pixels = s.OH() * s.OW();
  const bool nothing_to_skip = conv2d_tap_exact_macs(s) >= pixels * s.R * s.S;
  const bool large_batch = s.N >= 32;
  bool taps = false;
  switch (d) {
    case ConvDirection::Forward: taps = !nothing_to_skip && pixels <= 64; break;
    case ConvDirection::BackwardData: taps = !nothing_to_skip && (pixels <= 4 || (large_batch && pixels <= 16)); break;
    case ConvDirection::BackwardFilter:
      taps = nothing_to_skip ? pixels <= 64 : pixels <= 4 || (large_batch && pixels <= 49);
      break;
  }
  return taps ? ConvLowering::TapExact : ConvLowering::Library;
}

}  // namespace handgrad
