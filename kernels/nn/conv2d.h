// 2-D convolution, NCHW, no bias (ResNet's convolutions have none), square stride and padding:
//   y[n, co, oy, ox] = sum_{ci, ky, kx} w[co, ci, ky, kx] * x[n, ci, oy*s - p + ky, ox*s - p + kx]
// with x = 0 outside the image. OH = (H + 2p - KH) / s + 1, likewise OW.
//   conv2d_forward          y  = conv(x, w)
//   conv2d_backward_data    dx = conv^T(dy, w)            (overwrites dx)
//   conv2d_backward_filter  dw = sum_n dy_n (x) x_n       (overwrites dw)
// CPU twin: im2col + GEMM per image (OpenBLAS), images spread over OpenMP threads; it needs
// conv2d_workspace_floats() floats of scratch, which the caller owns (kernels never allocate).
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "kernels/common.h"

namespace handgrad {

struct Conv2dShape {
  int64_t N = 1, C = 1, H = 1, W = 1;  // input
  int64_t K = 1, R = 1, S = 1;         // output channels, kernel height, kernel width
  int64_t stride = 1, pad = 0;
  HG_HD int64_t OH() const { return (H + 2 * pad - R) / stride + 1; }
  HG_HD int64_t OW() const { return (W + 2 * pad - S) / stride + 1; }
};

namespace cpu {
int64_t conv2d_workspace_floats(const Conv2dShape& s);
void conv2d_forward(float* y, const float* x, const float* w, const Conv2dShape& s, float* workspace);
void conv2d_backward_data(float* dx, const float* dy, const float* w, const Conv2dShape& s, float* workspace);
void conv2d_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* workspace);

// Channels-last: activations NHWC (x [N, H, W, C], y [N, OH, OW, K]), weights [K, C, R, S] as the
// state dict holds them. The CPU ResNet's layout: oneDNN's fast convolutions read and write it
// directly (NCHW would cost a reorder of every activation, twice per layer). With oneDNN
// (HANDGRAD_WITH_ONEDNN) the primitives are created once per shape and cached, like the cuDNN
// plans; without it, the NCHW im2col twin above runs between two transposes.
// Weights are read in oneDNN's blocked layout: conv2d_nhwc_pack_weights() writes them into
// `packed` (conv2d_nhwc_packed_floats() floats, the caller's), and must run again whenever w
// changes. Scratch: conv2d_nhwc_workspace_floats() floats (64-byte aligned), which depends on N.
std::string conv2d_nhwc_backend();  // "oneDNN 2.6.3" or the fallback, for `info` and logs
int64_t conv2d_nhwc_plans_kept();   // the per-shape plans cached now (at most 128; 0 without oneDNN)
int64_t conv2d_nhwc_workspace_floats(const Conv2dShape& s);
int64_t conv2d_nhwc_packed_floats(const Conv2dShape& s);
void conv2d_nhwc_pack_weights(float* packed, const float* w, const Conv2dShape& s);
void conv2d_forward_nhwc(float* y, const float* x, const float* w, const float* packed, const Conv2dShape& s,
                         float* workspace);
void conv2d_backward_data_nhwc(float* dx, const float* dy, const float* w, const float* packed,
                               const Conv2dShape& s, float* workspace);
void conv2d_backward_filter_nhwc(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* workspace);
// [N, C, HW] <-> [N, HW, C]
void nchw_to_nhwc(float* dst, const float* src, int64_t N, int64_t C, int64_t HW);
void nhwc_to_nchw(float* dst, const float* src, int64_t N, int64_t C, int64_t HW);
}  // namespace cpu

// How the GPU's convolution algorithms are chosen (set_conv_algo_search below).
enum class ConvAlgoSearch { Heuristic, Timed };

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// cuDNN convolutions (device pointers). The algorithm is chosen once per shape and direction
// (the fastest deterministic one whose workspace fits in 256 MiB, by cuDNN's heuristics or, after
// set_conv_algo_search(Timed), by timing each candidate: cudnnFind) and cached, with one
// workspace shared by every shape; `tf32` lets cuDNN use TF32 tensor cores (PyTorch's default
// for convolutions), otherwise math is FP32 (FMA only).
void set_conv_algo_search(ConvAlgoSearch search);  // for the convolutions run after the call
// How many plans (shape, precision) were made with that search so far: a test's proof that a
// timed run really searched rather than reusing the heuristics' plans.
int64_t conv_plans_made(ConvAlgoSearch search);
// One line per shape planned so far (its three algorithms, math types, workspace, measured
// times with Timed), then the shared workspace's size.
std::vector<std::string> conv_plans_chosen();
// Channels-last, the twins of the CPU's *_nhwc forms with one more argument, `tf32`. Packed
// weights: KRSC (cuDNN's NHWC filter format); workspace: the backward filter's KRSC gradient.
int64_t conv2d_nhwc_workspace_floats(const Conv2dShape& s);
int64_t conv2d_nhwc_packed_floats(const Conv2dShape& s);
void conv2d_nhwc_pack_weights(float* packed, const float* w, const Conv2dShape& s);
void conv2d_forward_nhwc(float* y, const float* x, const float* w, const float* packed, const Conv2dShape& s,
                         float* workspace, bool tf32);
void conv2d_backward_data_nhwc(float* dx, const float* dy, const float* w, const float* packed, const Conv2dShape& s,
                               float* workspace, bool tf32);
void conv2d_backward_filter_nhwc(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* workspace,
                                 bool tf32);
}  // namespace cuda
#endif

}  // namespace handgrad
