// Tap-exact convolution, channels-last (x [N, H, W, C], y [N, OH, OW, K], w [K, C, R, S]; the
// math is conv2d.h's): on small maps most of a padded convolution's taps multiply zeros (a 3x3
// kernel with padding 1 on a 1x1 map uses 1 tap of 9; on 2x2, 4 of 9; on 4x4, 100 of 144), so
// this lowering computes only the taps that land inside the image.
//
// Output pixels are grouped by the rectangle of taps that land inside the image for them
// (conv2d_tap_groups: a row class times a column class; 3x3/1 pad 1 on 4x4: the corners, the
// edges and the middle, 9 groups). Each group is one GEMM over its valid taps only, with
// A_g [N*pixels, taps*C] the group's im2col rows (gathered from x) and W_g [K, taps*C] its slice
// of the weights (packed by conv2d_taps_pack_weights):
//   forward Y_g = A_g W_g^T,  backward data dA_g = dY_g W_g (then added back into dx),
//   backward filter dW_g = dY_g^T A_g (then added into dw; the taps on padding: exactly 0).
// When every output pixel's window covers the whole image (conv2d_is_dense_gemm: ResNet18's layer3
// and layer4 at 28x28) the whole convolution is one dense GEMM between the images as they lie
// and the outputs as they lie, with no gather at all:
//   M[(p*K + k)][(q*C + c)] = w[k][c][qh - ph*stride + pad][qw - pw*stride + pad]
// (p an output pixel, q an input pixel), Y = X M^T, dX = dY M, dM = dY^T X folded back into dw.
//
// Which lowering a layer runs (this, or the library's convolution: oneDNN / cuDNN) is decided per
// shape and direction by conv2d_lowering(), the same on both devices; the choice is host code so a
// test pins it on any machine. The GPU twin gathers and scatters with our kernels and multiplies
// with cuBLAS, one call per group, always in FP32 (--tf32 concerns cuDNN's convolutions only).
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/nn/conv2d.h"

namespace handgrad {

// Every output pixel's window covers the whole image (so each pixel of it meets each output pixel
// through exactly one tap): the dense-GEMM case.
inline bool conv2d_is_dense_gemm(const Conv2dShape& s) {
  return (s.OH() - 1) * s.stride <= s.pad && (s.OW() - 1) * s.stride <= s.pad && s.pad + s.H <= s.R &&
         s.pad + s.W <= s.S;
}

// Output pixels [oy0, oy1) x [ox0, ox1); for each of them the taps [r0, r1) x [t0, t1) land inside
// the image (and no other tap does).
struct ConvTapGroup {
  int64_t oy0, oy1, ox0, ox1;
  int64_t r0, r1, t0, t1;
  HG_HD int64_t pixels() const { return (oy1 - oy0) * (ox1 - ox0); }
  HG_HD int64_t taps() const { return (r1 - r0) * (t1 - t0); }
};

// Output rows (or columns) whose valid taps are the same range, as consecutive runs:
// tap r of output row o reads input row o*stride - pad + r, valid when in [0, extent).
struct ConvTapRun {
  int64_t o0, o1, r0, r1;
};
inline std::vector<ConvTapRun> conv2d_tap_runs(int64_t out, int64_t extent, int64_t kernel, int64_t stride,
                                               int64_t pad) {
  std::vector<ConvTapRun> runs;
  for (int64_t o = 0; o < out; ++o) {
    const int64_t first = o * stride - pad;
    int64_t r0 = first < 0 ? -first : 0, r1 = extent - first < kernel ? extent - first : kernel;
    if (r1 < r0) r1 = r0;  // the window misses the image: no valid tap
    if (!runs.empty() && runs.back().r0 == r0 && runs.back().r1 == r1)
      runs.back().o1 = o + 1;
    else
      runs.push_back({o, o + 1, r0, r1});
  }
  return runs;
}

inline std::vector<ConvTapGroup> conv2d_tap_groups(const Conv2dShape& s) {
  std::vector<ConvTapGroup> groups;
  for (const ConvTapRun& rows : conv2d_tap_runs(s.OH(), s.H, s.R, s.stride, s.pad))
    for (const ConvTapRun& cols : conv2d_tap_runs(s.OW(), s.W, s.S, s.stride, s.pad))
      groups.push_back({rows.o0, rows.o1, cols.o0, cols.o1, rows.r0, rows.r1, cols.r0, cols.r1});
  return groups;
}

// Where each group's matrices lie, the same on both devices: its im2col rows A_g [N*pixels, taps*C]
// (offset a) and output rows Y_g [N*pixels, K] (offset y) in the workspace, its weights
// W_g [K, taps*C] (offset w) in the packed weights and, during backward filter, its weight
// gradient at the same offset after the workspace's rows. Offsets are multiples of 16 floats.
struct ConvTapLayout {
  struct At {
    ConvTapGroup g;
    int64_t a, y, w;
  };
  std::vector<At> groups;
  int64_t a_floats = 0, y_floats = 0, w_floats = 0;
};
inline ConvTapLayout conv2d_tap_layout(const Conv2dShape& s) {
  auto round_up16 = [](int64_t n) { return (n + 15) / 16 * 16; };
  ConvTapLayout l;
  for (const ConvTapGroup& g : conv2d_tap_groups(s)) {
    l.groups.push_back({g, l.a_floats, l.y_floats, l.w_floats});
    l.a_floats += round_up16(s.N * g.pixels() * g.taps() * s.C);
    l.y_floats += round_up16(s.N * g.pixels() * s.K);
    l.w_floats += round_up16(s.K * g.taps() * s.C);
  }
  return l;
}

// Floats the caller provides, on either device: the packed weights (read by forward and backward
// data; conv2d_taps_pack_weights must run again whenever w changes) and the scratch of one call
// (depends on N).
inline int64_t conv2d_taps_packed_floats(const Conv2dShape& s) {
  return conv2d_is_dense_gemm(s) ? s.OH() * s.OW() * s.K * s.H * s.W * s.C : conv2d_tap_layout(s).w_floats;
}
inline int64_t conv2d_taps_workspace_floats(const Conv2dShape& s) {
  if (conv2d_is_dense_gemm(s)) return s.OH() * s.OW() * s.K * s.H * s.W * s.C;  // dM
  const ConvTapLayout l = conv2d_tap_layout(s);
  return l.a_floats + l.y_floats + l.w_floats;
}

// The group path's im2col rows (every group's A_g, conv2d_tap_layout's a_floats; none in the
// dense case): forward gathers them from x, and backward filter needs the same rows of the same x.
// A caller that keeps them from one to the other gives forward a buffer of this many floats
// (`keep_im2col`: the rows are gathered there instead of into the workspace) and backward filter
// the same buffer (`kept_im2col`: its gather is skipped). x must not change in between.
inline int64_t conv2d_taps_im2col_floats(const Conv2dShape& s) {
  return conv2d_is_dense_gemm(s) ? 0 : conv2d_tap_layout(s).a_floats;
}

// The multiply-adds the tap-exact lowering does, per image and output/input channel pair
// (the generic convolution's: OH*OW*R*S; the dense GEMM's: OH*OW*H*W).
inline int64_t conv2d_tap_exact_macs(const Conv2dShape& s) {
  if (conv2d_is_dense_gemm(s)) return s.OH() * s.OW() * s.H * s.W;
  int64_t macs = 0;
  for (const ConvTapGroup& g : conv2d_tap_groups(s)) macs += g.pixels() * g.taps();
  return macs;
}

enum class ConvLowering { Library, TapExact };
enum class ConvDirection { Forward, BackwardData, BackwardFilter };
// What nn::Conv2d runs for this shape and direction, on either device (measured: bench_conv).
ConvLowering conv2d_lowering(const Conv2dShape& s, ConvDirection d);

namespace cpu {
void conv2d_taps_pack_weights(float* packed, const float* w, const Conv2dShape& s);
void conv2d_taps_forward(float* y, const float* x, const float* packed, const Conv2dShape& s, float* workspace,
                         float* keep_im2col = nullptr);
void conv2d_taps_backward_data(float* dx, const float* dy, const float* packed, const Conv2dShape& s,
                               float* workspace);
void conv2d_taps_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* workspace,
                                 const float* kept_im2col = nullptr);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {  // device pointers; the same contract
void conv2d_taps_pack_weights(float* packed, const float* w, const Conv2dShape& s);
void conv2d_taps_forward(float* y, const float* x, const float* packed, const Conv2dShape& s, float* workspace,
                         float* keep_im2col = nullptr);
void conv2d_taps_backward_data(float* dx, const float* dy, const float* packed, const Conv2dShape& s,
                               float* workspace);
void conv2d_taps_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* workspace,
                                 const float* kept_im2col = nullptr);
}  // namespace cuda
#endif

}  // namespace handgrad
