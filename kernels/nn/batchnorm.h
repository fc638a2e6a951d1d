// Batch normalisation over (N, H, W) per channel, as PyTorch's BatchNorm2d, channels-last (x as
// [rows, C], rows = N*H*W: the ResNet's layout on both devices):
//   train: mean, var = batch mean and biased variance; y = gamma * (x - mean) * invstd + beta,
//          invstd = 1 / sqrt(var + eps); running_mean = (1 - m) running_mean + m mean,
//          running_var = (1 - m) running_var + m var * n / (n - 1)   (unbiased), n = N*H*W
//   eval:  the same with the running statistics, which stay as they are.
// Backward (train mode): with xhat = (x - mean) * invstd,
//   dbeta = sum dy, dgamma = sum dy * xhat, dx = gamma * invstd / n * (n dy - dbeta - xhat dgamma)
// dgamma / dbeta are always computed (dx needs them) and written when not null.
#pragma once
#include <cstdint>

namespace handgrad {

// PyTorch's BatchNorm2d defaults.
constexpr float kBatchNormEps = 1e-5f, kBatchNormMomentum = 0.1f;

namespace cpu {
// Split so that the passes PyTorch runs one after another fold into one:
//   batchnorm_stats_nhwc:     train-mode mean and invstd (saved for the backward pass), running
//                             statistics updated
//   batchnorm_scale_shift:    scale = gamma * invstd, shift = beta - mean * scale; from the batch's
//                             statistics (train) or the running ones (eval: var -> invstd here)
//   scale_shift_relu_nhwc:    y = max(x * scale + shift + (x2 * scale2 + shift2 | residual | 0), 0):
//                             BN + ReLU, and the residual join BN + add + ReLU with the identity
//                             or a second (downsample) BN, in one pass
//   batchnorm_backward_nhwc:  the backward above, with dy first masked by [relu_out > 0] when
//                             relu_out is given (the ReLU after the BN), in two passes
// Sums run over a fixed number of row chunks, so results do not depend on the thread count.
// `workspace`: batchnorm_nhwc_workspace_floats() floats (8-byte aligned; none on the CPU, whose
// partial sums live on the stack), so that both devices' forms take the same arguments.
int64_t batchnorm_nhwc_workspace_floats(int64_t rows, int64_t C);
void batchnorm_stats_nhwc(float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                          const float* x, int64_t rows, int64_t C, float eps, float momentum, float* workspace);
void batchnorm_scale_shift(float* scale, float* shift, const float* gamma, const float* beta, const float* mean,
                           const float* invstd, int64_t C);
void batchnorm_eval_scale_shift(float* scale, float* shift, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int64_t C, float eps);
void scale_shift_relu_nhwc(float* y, const float* x, const float* scale, const float* shift, const float* x2,
                           const float* scale2, const float* shift2, const float* residual, int64_t rows, int64_t C);
void batchnorm_backward_nhwc(float* dx, float* dgamma, float* dbeta, const float* dy, const float* relu_out,
                             const float* x, const float* gamma, const float* save_mean, const float* save_invstd,
                             int64_t rows, int64_t C, float* workspace);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// The channels-last forms, twins of the CPU's above (same arguments, same math; the sums are
// deterministic, over a fixed split of the rows that fills the GPU: batchnorm.cu).
int64_t batchnorm_nhwc_workspace_floats(int64_t rows, int64_t C);
void batchnorm_stats_nhwc(float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                          const float* x, int64_t rows, int64_t C, float eps, float momentum, float* workspace);
void batchnorm_scale_shift(float* scale, float* shift, const float* gamma, const float* beta, const float* mean,
                           const float* invstd, int64_t C);
void batchnorm_eval_scale_shift(float* scale, float* shift, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int64_t C, float eps);
void scale_shift_relu_nhwc(float* y, const float* x, const float* scale, const float* shift, const float* x2,
                           const float* scale2, const float* shift2, const float* residual, int64_t rows, int64_t C);
void batchnorm_backward_nhwc(float* dx, float* dgamma, float* dbeta, const float* dy, const float* relu_out,
                             const float* x, const float* gamma, const float* save_mean, const float* save_invstd,
                             int64_t rows, int64_t C, float* workspace);
}  // namespace cuda
#endif

}  // namespace handgrad
