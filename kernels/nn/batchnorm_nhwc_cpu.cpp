// Channels-last BatchNorm on the CPU, with the neighbouring ReLU and residual add folded in
// (batchnorm.h states the contract). The arithmetic is the NCHW twin's, term for term, except
// that the forward applies x * scale + shift (as PyTorch's CPU kernel does).
#include <algorithm>
#include <cmath>

#include "kernels/error.h"
#include "kernels/cpu_parallel.h"
#include "kernels/nn/batchnorm.h"

namespace handgrad::cpu {

namespace {

// Per-channel values live on the stack (kernels never allocate): at most this many channels.
constexpr int64_t kMaxChannels = 8192;
// The rows are cut into a fixed number of chunks, each streamed (contiguous, full vectors over
// C) by one thread into its own partial sums; the partials are added in chunk order, so every
// result is the same whatever the thread count.
constexpr int64_t kPartialDoubles = 16384;
constexpr int64_t kMaxChunks = 16;

void check_channels(int64_t C) {
  HG_REQUIRE(C > 0 && C <= kMaxChannels, "channels-last BatchNorm takes 1..", kMaxChannels, " channels, got ", C);
}

// sums[t * C + c] = sum over rows of the T terms that add_row(acc, r) adds for row r into
// acc[t * C + c] (acc starts at zero for each chunk).
template <int T, class AddRow>
void channel_sums(double* sums, int64_t rows, int64_t C, AddRow add_row) {
  const int64_t chunks = std::clamp<int64_t>(std::min(kPartialDoubles / (T * C), rows / 32), 1, kMaxChunks);
  double partial[kPartialDoubles];
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < chunks; ++k) {
    double* acc = partial + k * T * C;
    std::fill(acc, acc + T * C, 0.0);
    for (int64_t r = rows * k / chunks; r < rows * (k + 1) / chunks; ++r) add_row(acc, r);
  }
  std::fill(sums, sums + T * C, 0.0);
  for (int64_t k = 0; k < chunks; ++k)
    for (int64_t i = 0; i < T * C; ++i) sums[i] += partial[k * T * C + i];
}

}  // namespace

int64_t batchnorm_nhwc_workspace_floats(int64_t, int64_t) { return 0; }

void batchnorm_stats_nhwc(float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                          const float* x, int64_t rows, int64_t C, float eps, float momentum, float*) {
  check_channels(C);
  // Two passes in double: the mean, then the squared deviations (no cancellation).
  double mean[kMaxChannels], sq[kMaxChannels];
  channel_sums<1>(mean, rows, C, [&](double* acc, int64_t r) {
    const float* p = x + r * C;
    for (int64_t c = 0; c < C; ++c) acc[c] += p[c];
  });
  for (int64_t c = 0; c < C; ++c) mean[c] /= rows;
  channel_sums<1>(sq, rows, C, [&](double* acc, int64_t r) {
    const float* p = x + r * C;
    for (int64_t c = 0; c < C; ++c) acc[c] += (p[c] - mean[c]) * (p[c] - mean[c]);
  });
  for (int64_t c = 0; c < C; ++c) {
    const double var = sq[c] / rows;
    save_mean[c] = static_cast<float>(mean[c]);
    save_invstd[c] = static_cast<float>(1.0 / std::sqrt(var + eps));
    running_mean[c] = (1 - momentum) * running_mean[c] + momentum * save_mean[c];
    const double unbiased = rows > 1 ? var * rows / (rows - 1) : var;
    running_var[c] = (1 - momentum) * running_var[c] + momentum * static_cast<float>(unbiased);
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

void batchnorm_backward_nhwc(float* dx, float* dgamma, float* dbeta, const float* dy, const float* relu_out,
                             const float* x, const float* gamma, const float* save_mean, const float* save_invstd,
                             int64_t rows, int64_t C, float*) {
  check_channels(C);
  const float* m = save_mean;
  const float* invstd = save_invstd;
  // The gradient reaching the BN, row r: dy where the ReLU after it passed its input on.
  const auto masked = [&](float* g, int64_t r) {
    const float* d = dy + r * C;
    if (!relu_out) return std::copy(d, d + C, g), void();
    const float* y = relu_out + r * C;
    for (int64_t c = 0; c < C; ++c) g[c] = keep_if(y[c] > 0.f, d[c]);
  };
  double sums[2 * kMaxChannels];  // sum dy, then sum dy * xhat
  channel_sums<2>(sums, rows, C, [&](double* acc, int64_t r) {
    float g[kMaxChannels], gx[kMaxChannels];  // float terms first, widened to double after
    masked(g, r);
    const float* p = x + r * C;
    for (int64_t c = 0; c < C; ++c) gx[c] = g[c] * ((p[c] - m[c]) * invstd[c]);
    for (int64_t c = 0; c < C; ++c) acc[c] += g[c], acc[C + c] += gx[c];
  });
  float k[kMaxChannels], a[kMaxChannels], bq[kMaxChannels];
  for (int64_t c = 0; c < C; ++c) {
    if (dgamma) dgamma[c] = static_cast<float>(sums[C + c]);
    if (dbeta) dbeta[c] = static_cast<float>(sums[c]);
    k[c] = gamma[c] * invstd[c] / rows;
    a[c] = static_cast<float>(sums[c]);
    bq[c] = static_cast<float>(sums[C + c]);
  }
  const float n = static_cast<float>(rows);
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    float g[kMaxChannels];
    masked(g, r);
    const float* p = x + r * C;
    float* q = dx + r * C;
    for (int64_t c = 0; c < C; ++c) q[c] = k[c] * (n * g[c] - a[c] - (p[c] - m[c]) * invstd[c] * bq[c]);
  }
}

}  // namespace handgrad::cpu
