// The CUDA kernels round exactly as the CPU twins (no fused multiply-add): bit-identical results.
// Plain SGD (no momentum) over groups of parameters laid out back to back, one learning rate
// per group (one group per model in a learning-rate sweep):
//   params[g * n + i] -= lr[g] * grads[g * n + i]      for g < groups, i < n
// `advance_step`, when not null, is a device counter incremented once after the update: the
// last kernel of a training step moves the step on, which lets a CUDA graph replay a block of
// steps whose kernels read the current step from memory.
#pragma once
#include <cstdint>

namespace handgrad {

// Disjoint ranges [begin, end) of one flat parameter buffer: the trainable tensors of a model
// whose others are frozen, updated in one launch.
struct ParamRanges {
  static constexpr int kMax = 8;
  int count = 0;
  int64_t begin[kMax] = {}, end[kMax] = {};
};

namespace cpu {
void sgd_step(float* params, const float* grads, const float* lr, int64_t groups, int64_t n);
// PyTorch's SGD with momentum (no dampening, no weight decay, not Nesterov), on n floats:
//   v = mu * v + g;  p -= lr * v        (v starts at 0, so the first step's v is g, as PyTorch)
void sgd_momentum_step(float* params, const float* grads, float* velocity, int64_t n, float lr, float mu);
// The same over each range of `ranges` (offsets into params, grads and velocity alike).
void sgd_momentum_step(float* params, const float* grads, float* velocity, const ParamRanges& ranges, float lr,
                       float mu);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
void sgd_step(float* params, const float* grads, const float* lr, int64_t groups, int64_t n,
              int64_t* advance_step = nullptr);
void sgd_momentum_step(float* params, const float* grads, float* velocity, int64_t n, float lr, float mu);
void sgd_momentum_step(float* params, const float* grads, float* velocity, const ParamRanges& ranges, float lr,
                       float mu);
}  // namespace cuda
#endif

}  // namespace handgrad
