// Batch normalisation over (N, H, W) per channel, NCHW, as PyTorch's BatchNorm2d:
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

struct BatchNormShape {
  int64_t N = 1, C = 1, HW = 1;
  float eps = 1e-5f, momentum = 0.1f;
};

namespace cpu {
// save_mean / save_invstd: [C], kept for the backward pass.
void batchnorm_forward_train(float* y, const float* x, const float* gamma, const float* beta,
                             float* running_mean, float* running_var, float* save_mean,
                             float* save_invstd, const BatchNormShape& s);
void batchnorm_forward_eval(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, const BatchNormShape& s);
void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        const BatchNormShape& s);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// Scratch that train-mode forward and backward need (floats, 8-byte aligned): per-chunk sums of
// each channel's values, which are spread over more blocks than there are channels.
int64_t batchnorm_workspace_floats(const BatchNormShape& s);
void batchnorm_forward_train(float* y, const float* x, const float* gamma, const float* beta,
                             float* running_mean, float* running_var, float* save_mean,
                             float* save_invstd, const BatchNormShape& s, float* workspace);
void batchnorm_forward_eval(float* y, const float* x, const float* gamma, const float* beta,
                            const float* running_mean, const float* running_var, const BatchNormShape& s);
void batchnorm_backward(float* dx, float* dgamma, float* dbeta, const float* dy, const float* x,
                        const float* gamma, const float* save_mean, const float* save_invstd,
                        const BatchNormShape& s, float* workspace);
}  // namespace cuda
#endif

}  // namespace handgrad
