// Channels-last BatchNorm on the CPU, with the neighbouring ReLU and residual add folded in
// (batchnorm.h states the contract). The arithmetic is the NCHW twin's, term for term, except
// that the forward applies x * scale + shift (as PyTorch's CPU kernel does).
#include <algorithm>
#include <cmath>

#include "kernels/nn/batchnorm.h"

namespace handgrad::cpu {

namespace {
// Channels per work item: one cache line of a row. Splitting the work over channels (not rows)
// keeps every sum in one order whatever the thread count, and needs no per-thread scratch.
constexpr int64_t kBlock = 16;
int64_t channel_blocks(int64_t C) { return (C + kBlock - 1) / kBlock; }
}  // namespace

void batchnorm_stats_nhwc(float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                          const float* x, int64_t rows, int64_t C, float eps, float momentum) {
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < channel_blocks(C); ++blk) {
    const int64_t c0 = blk * kBlock, w = std::min(kBlock, C - c0);
    // Two passes in double: the mean, then the squared deviations (no cancellation).
    double sum[kBlock] = {}, sq[kBlock] = {}, mean[kBlock];
    for (int64_t r = 0; r < rows; ++r) {
      const float* p = x + r * C + c0;
      for (int64_t j = 0; j < w; ++j) sum[j] += p[j];
    }
    for (int64_t j = 0; j < w; ++j) mean[j] = sum[j] / rows;
    for (int64_t r = 0; r < rows; ++r) {
      const float* p = x + r * C + c0;
      for (int64_t j = 0; j < w; ++j) sq[j] += (p[j] - mean[j]) * (p[j] - mean[j]);
    }
    for (int64_t j = 0; j < w; ++j) {
      const int64_t c = c0 + j;
      const double var = sq[j] / rows;
      save_mean[c] = static_cast<float>(mean[j]);
      save_invstd[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
      running_mean[c] = (1 - momentum) * running_mean[c] + momentum * save_mean[c];
      const double unbiased = rows > 1 ? var * rows / (rows - 1) : var;
      running_var[c] = (1 - momentum) * running_var[c] + momentum * static_cast<float>(unbiased);
    }
  }
}

void batchnorm_scale_shift(float* scale, float* shift, const float* gamma, const float* beta, const float* mean,
                           const float* invstd, int64_t C) {
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = gamma[c] * invstd[c];
    shift[c] = beta[c] - mean[c] * scale[c];
  }
}

void batchnorm_eval_scale_shift(float* scale, float* shift, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int64_t C, float eps) {
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = gamma[c] * (1.f / std::sqrt(running_var[c] + eps));
    shift[c] = beta[c] - running_mean[c] * scale[c];
  }
}

void scale_shift_relu_nhwc(float* y, const float* x, const float* scale, const float* shift, const float* x2,
                           const float* scale2, const float* shift2, const float* residual, int64_t rows, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* p = x + r * C;
    float* q = y + r * C;
    if (x2) {
      const float* p2 = x2 + r * C;
      for (int64_t c = 0; c < C; ++c) q[c] = std::max((p[c] * scale[c] + shift[c]) + (p2[c] * scale2[c] + shift2[c]), 0.f);
    } else if (residual) {
      const float* id = residual + r * C;
      for (int64_t c = 0; c < C; ++c) q[c] = std::max((p[c] * scale[c] + shift[c]) + id[c], 0.f);
    } else {
      for (int64_t c = 0; c < C; ++c) q[c] = std::max(p[c] * scale[c] + shift[c], 0.f);
    }
  }
}

namespace {

// One block of channels [c0, c0 + w) of batchnorm_backward_nhwc. Masked and w are template
// arguments so that the common case (w = kBlock) compiles to straight vector code.
template <bool Masked, int64_t W>
void bn_backward_block(float* dx, float* dgamma, float* dbeta, const float* dy, const float* relu_out, const float* x,
                       const float* gamma, const float* save_mean, const float* save_invstd, int64_t rows, int64_t C,
                       int64_t c0, int64_t w) {
  if constexpr (W > 0) w = W;
  const float* m = save_mean + c0;
  const float* invstd = save_invstd + c0;
  // The gradient reaching the BN: dy where the ReLU after it passed its input on (a select,
  // so the loops vectorise).
  const auto grad = [&](int64_t i) {
    const float d = dy[i];  // loaded either way: a conditional load would keep the loop scalar
    return Masked ? (relu_out[i] > 0.f ? d : 0.f) : d;
  };
  double sdy[kBlock] = {}, sdyx[kBlock] = {};
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * C + c0;
    float d[kBlock];  // the select and the widening to double in separate loops: both vectorise
    for (int64_t j = 0; j < w; ++j) d[j] = grad(o + j);
    for (int64_t j = 0; j < w; ++j) {
      sdy[j] += d[j];
      sdyx[j] += d[j] * ((x[o + j] - m[j]) * invstd[j]);
    }
  }
  float k[kBlock], a[kBlock], bq[kBlock];
  for (int64_t j = 0; j < w; ++j) {
    if (dgamma) dgamma[c0 + j] = static_cast<float>(sdyx[j]);
    if (dbeta) dbeta[c0 + j] = static_cast<float>(sdy[j]);
    k[j] = gamma[c0 + j] * invstd[j] / rows;
    a[j] = static_cast<float>(sdy[j]);
    bq[j] = static_cast<float>(sdyx[j]);
  }
  const float n = static_cast<float>(rows);
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t o = r * C + c0;
    for (int64_t j = 0; j < w; ++j) dx[o + j] = k[j] * (n * grad(o + j) - a[j] - (x[o + j] - m[j]) * invstd[j] * bq[j]);
  }
}

}  // namespace

void batchnorm_backward_nhwc(float* dx, float* dgamma, float* dbeta, const float* dy, const float* relu_out,
                             const float* x, const float* gamma, const float* save_mean, const float* save_invstd,
                             int64_t rows, int64_t C) {
#pragma omp parallel for schedule(static)
  for (int64_t blk = 0; blk < channel_blocks(C); ++blk) {
    const int64_t c0 = blk * kBlock, w = std::min(kBlock, C - c0);
    const auto run = [&](auto block) { block(dx, dgamma, dbeta, dy, relu_out, x, gamma, save_mean, save_invstd, rows, C, c0, w); };
    if (w == kBlock) relu_out ? run(bn_backward_block<true, kBlock>) : run(bn_backward_block<false, kBlock>);
    else relu_out ? run(bn_backward_block<true, 0>) : run(bn_backward_block<false, 0>);
  }
}

}  // namespace handgrad::cpu
