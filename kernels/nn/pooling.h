// Pooling, channels-last (x [N, H, W, C]: the ResNet's layout on both devices).
//   maxpool2d_forward_nhwc: y = max over each R x R window (stride, pad; padding never wins), and
//                           argmax = the winner's index within the image plane (iy * W + ix, as
//                           PyTorch's return_indices), per channel
//   maxpool2d_backward_nhwc: dx = scatter-add of dy at argmax (overwrites dx)
//   global_avgpool_forward_nhwc:  y[n, c] = mean over H*W of x[n, :, :, c]
//   global_avgpool_backward_nhwc: dx[n, :, :, c] = dy[n, c] / (H*W)
#pragma once
#include <cstdint>

#include "kernels/common.h"

namespace handgrad {

struct Pool2dShape {
  int64_t N = 1, C = 1, H = 1, W = 1;
  int64_t R = 3, stride = 2, pad = 1;
  HG_HD int64_t OH() const { return (H + 2 * pad - R) / stride + 1; }
  HG_HD int64_t OW() const { return (W + 2 * pad - R) / stride + 1; }
  // The input rows [begin, end) of output row oy's window that lie inside the image, and the
  // columns of output column ox's: padding never wins, so every max-pool scan walks just these.
  struct Span {
    int64_t begin, end;
  };
  HG_HD Span window_rows(int64_t oy) const { return clip(oy * stride - pad, H); }
  HG_HD Span window_cols(int64_t ox) const { return clip(ox * stride - pad, W); }

 private:
  HG_HD Span clip(int64_t first, int64_t size) const {
    return {first < 0 ? 0 : first, first + R < size ? first + R : size};
  }
};

namespace cpu {
// A window holding NaN yields its first NaN.
void maxpool2d_forward_nhwc(float* y, int32_t* argmax, const float* x, const Pool2dShape& s);
void maxpool2d_backward_nhwc(float* dx, const float* dy, const int32_t* argmax, const Pool2dShape& s);
void global_avgpool_forward_nhwc(float* y, const float* x, int64_t N, int64_t HW, int64_t C);
void global_avgpool_backward_nhwc(float* dx, const float* dy, int64_t N, int64_t HW, int64_t C);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// The channels-last forms (the ResNet's layout on both devices), same arguments and bits.
void maxpool2d_forward_nhwc(float* y, int32_t* argmax, const float* x, const Pool2dShape& s);
void maxpool2d_backward_nhwc(float* dx, const float* dy, const int32_t* argmax, const Pool2dShape& s);
void global_avgpool_forward_nhwc(float* y, const float* x, int64_t N, int64_t HW, int64_t C);
void global_avgpool_backward_nhwc(float* dx, const float* dy, int64_t N, int64_t HW, int64_t C);
}  // namespace cuda
#endif

}  // namespace handgrad
