#include "host/nn.h"

#include <algorithm>

#include "host/dispatch.h"
#include "kernels/einsum/reduce.h"
#include "kernels/nn/mse.h"
#include "kernels/nn/relu.h"
#include "kernels/nn/rows.h"
#include "kernels/nn/xent.h"

namespace handgrad::nn {

// ---- Conv2d --------------------------------------------------------------------------------

Conv2d::Conv2d(const Conv2dShape& s, Device device, bool tf32, MemoryTally* host_tally)
    : shape(s),
      device_(device),
      tf32_(tf32),
      forward_(conv2d_lowering(s, ConvDirection::Forward)),
      backward_data_(conv2d_lowering(s, ConvDirection::BackwardData)),
      backward_filter_(conv2d_lowering(s, ConvDirection::BackwardFilter)) {
  const bool cpu = device == Device::CPU;
  const int64_t library = !reads_packed(ConvLowering::Library) ? 0
                          : cpu ? cpu::conv2d_nhwc_packed_floats(s)
                                : HG_CUDA(int64_t, conv2d_nhwc_packed_floats, s);
  const int64_t taps = reads_packed(ConvLowering::TapExact) ? conv2d_taps_packed_floats(s) : 0;
  const int64_t library_floats = std::max<int64_t>(library, 1), taps_floats = std::max<int64_t>(taps, 1);
  if (cpu && host_tally) host_tally->add(sizeof(float) * static_cast<uint64_t>(library_floats + taps_floats));
  packed_library_ = Tensor::zeros({library_floats}, device);
  packed_taps_ = Tensor::zeros({taps_floats}, device);
}

int64_t Conv2d::workspace_floats() const {
  const bool cpu = device_ == Device::CPU;
  int64_t floats = 0;
  for (const ConvLowering l : {forward_, backward_data_, backward_filter_}) {
    const int64_t f = l == ConvLowering::TapExact ? conv2d_taps_workspace_floats(shape)
                      : cpu ? cpu::conv2d_nhwc_workspace_floats(shape)
                            : HG_CUDA(int64_t, conv2d_nhwc_workspace_floats, shape);
    floats = std::max(floats, f);
  }
  return floats;
}

int64_t Conv2d::keepable_im2col_floats(int64_t images) const {
  if (forward_ != ConvLowering::TapExact || backward_filter_ != ConvLowering::TapExact) return 0;
  Conv2dShape s = shape;
  s.N = images;
  return conv2d_taps_im2col_floats(s);
}

const float* Conv2d::packed(const float* w, ConvLowering lowering) {
  if (stale_) {  // both copies, so the two directions never read weights of different steps
    if (reads_packed(ConvLowering::Library))
      HG_ON_DEVICE(device_, conv2d_nhwc_pack_weights, packed_library_.data<float>(), w, shape);
    if (reads_packed(ConvLowering::TapExact))
      HG_ON_DEVICE(device_, conv2d_taps_pack_weights, packed_taps_.data<float>(), w, shape);
  }
  stale_ = false;
  return (lowering == ConvLowering::TapExact ? packed_taps_ : packed_library_).data<float>();
}

void Conv2d::forward(float* y, const float* x, const float* w, float* workspace, float* keep_im2col) {
  const float* p = packed(w, forward_);
  if (forward_ == ConvLowering::TapExact)
    return HG_ON_DEVICE(device_, conv2d_taps_forward, y, x, p, shape, workspace, keep_im2col);
  if (device_ == Device::CPU) return cpu::conv2d_forward_nhwc(y, x, w, p, shape, workspace);
  HG_CUDA(void, conv2d_forward_nhwc, y, x, w, p, shape, workspace, tf32_);
}

void Conv2d::backward_data(float* dx, const float* dy, const float* w, float* workspace) {
  const float* p = packed(w, backward_data_);
  if (backward_data_ == ConvLowering::TapExact)
    return HG_ON_DEVICE(device_, conv2d_taps_backward_data, dx, dy, p, shape, workspace);
  if (device_ == Device::CPU) return cpu::conv2d_backward_data_nhwc(dx, dy, w, p, shape, workspace);
  HG_CUDA(void, conv2d_backward_data_nhwc, dx, dy, w, p, shape, workspace, tf32_);
}

void Conv2d::backward_filter(float* dw, const float* dy, const float* x, float* workspace, const float* kept_im2col) {
  if (backward_filter_ == ConvLowering::TapExact)
    return HG_ON_DEVICE(device_, conv2d_taps_backward_filter, dw, dy, x, shape, workspace, kept_im2col);
  if (device_ == Device::CPU) return cpu::conv2d_backward_filter_nhwc(dw, dy, x, shape, workspace);
  HG_CUDA(void, conv2d_backward_filter_nhwc, dw, dy, x, shape, workspace, tf32_);
}

void set_conv_algo_search(Device device, bool timed) {
  if (device == Device::CPU) return;
  HG_CUDA(void, set_conv_algo_search, timed ? ConvAlgoSearch::Timed : ConvAlgoSearch::Heuristic);
}

std::vector<std::string> conv_algorithms_chosen(Device device) {
  if (device == Device::CPU) return {};
  return HG_CUDA(std::vector<std::string>, conv_plans_chosen);
}

// ---- BatchNorm, ReLU -----------------------------------------------------------------------

int64_t batchnorm_workspace_floats(Device d, int64_t rows, int64_t C) {
  return HG_ON_DEVICE(d, batchnorm_nhwc_workspace_floats, rows, C);
}

void batchnorm_stats(Device d, float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                     const float* x, int64_t rows, int64_t C, float* workspace) {
  HG_ON_DEVICE(d, batchnorm_stats_nhwc, save_mean, save_invstd, running_mean, running_var, x, rows, C, kBatchNormEps,
               kBatchNormMomentum, workspace);
}

void batchnorm_scale_shift(Device d, float* scale, float* shift, const float* gamma, const float* beta,
                           const float* mean, const float* invstd, int64_t C) {
  HG_ON_DEVICE(d, batchnorm_scale_shift, scale, shift, gamma, beta, mean, invstd, C);
}

void batchnorm_eval_scale_shift(Device d, float* scale, float* shift, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int64_t C) {
  HG_ON_DEVICE(d, batchnorm_eval_scale_shift, scale, shift, gamma, beta, running_mean, running_var, C,
               kBatchNormEps);
}

void scale_shift_relu(Device d, float* y, const float* x, const float* scale, const float* shift, const float* x2,
                      const float* scale2, const float* shift2, const float* residual, int64_t rows, int64_t C) {
  HG_ON_DEVICE(d, scale_shift_relu_nhwc, y, x, scale, shift, x2, scale2, shift2, residual, rows, C);
}

void batchnorm_backward(Device d, float* dx, float* dgamma, float* dbeta, const float* dy, const float* relu_out,
                        const float* x, const float* gamma, const float* save_mean, const float* save_invstd,
                        int64_t rows, int64_t C, float* workspace) {
  HG_ON_DEVICE(d, batchnorm_backward_nhwc, dx, dgamma, dbeta, dy, relu_out, x, gamma, save_mean, save_invstd, rows,
               C, workspace);
}

void add_relu_backward(Device d, float* dx, const float* dy, const float* y, int64_t n) {
  HG_ON_DEVICE(d, add_relu_backward, dx, dy, y, n);
}

// ---- Pooling -------------------------------------------------------------------------------

void maxpool_forward(Device d, float* y, int32_t* argmax, const float* x, const Pool2dShape& s) {
  HG_ON_DEVICE(d, maxpool2d_forward_nhwc, y, argmax, x, s);
}

void maxpool_backward(Device d, float* dx, const float* dy, const int32_t* argmax, const Pool2dShape& s) {
  HG_ON_DEVICE(d, maxpool2d_backward_nhwc, dx, dy, argmax, s);
}

void global_avgpool_forward(Device d, float* y, const float* x, int64_t N, int64_t HW, int64_t C) {
  HG_ON_DEVICE(d, global_avgpool_forward_nhwc, y, x, N, HW, C);
}

void global_avgpool_backward(Device d, float* dx, const float* dy, int64_t N, int64_t HW, int64_t C) {
  HG_ON_DEVICE(d, global_avgpool_backward_nhwc, dx, dy, N, HW, C);
}

// ---- The classifier ------------------------------------------------------------------------

void gemm(Device d, float* C, const float* A, const float* B, const GemmShape& s) {
  HG_ON_DEVICE(d, gemm_batched, C, A, B, s);
}

void add_row_bias(Device d, float* y, const float* b, int64_t N, int64_t K) {
  HG_ON_DEVICE(d, add_row_bias, y, b, N, K);
}

int64_t column_sums_workspace_floats(Device d, int64_t rows_max, int64_t cols) {
  if (d == Device::CPU) return 0;
  int64_t most = 0;  // the GPU's split plan depends on the row count: size for every count
  for (int64_t rows = 1; rows <= rows_max; ++rows)
    most = std::max(most, HG_CUDA(int64_t, sum_middle_workspace, 1, rows, cols));
  return most;
}

void column_sums(Device d, float* out, const float* x, int64_t rows, int64_t cols, float* workspace) {
  if (d == Device::CPU) return cpu::sum_middle(out, x, 1, rows, cols);
  HG_CUDA(void, sum_middle, out, x, 1, rows, cols, workspace);
}

void softmax_xent(Device d, float* dz, double* sums, float* row_loss, int32_t* row_correct, const float* z,
                  const int32_t* labels, int64_t N, int64_t K) {
  if (d == Device::CPU) {
    int64_t right = 0;
    sums[0] += N * cpu::softmax_xent(dz, z, labels, N, K, &right);
    sums[1] += right;
    return;
  }
  HG_CUDA(void, softmax_xent, dz, row_loss, row_correct, z, labels, N, K);
  HG_CUDA(void, add_row_sums, sums, row_loss, row_correct, N);
}

LossSums::LossSums(Device d) : device_(d), sums_(2 * sizeof(double), d) { zero(); }

void LossSums::zero() {
  images = 0;
  zero_bytes(sums_.get(), device_, 2 * sizeof(double));
}

LossSums::Taken LossSums::take() {
  double s[2];
  copy_bytes(s, Device::CPU, sums_.get(), device_, sizeof s);
  const Taken out{s[0], images, static_cast<int64_t>(s[1])};
  zero();
  return out;
}

void LossSums::put_back(const Taken& t) {
  if (t.images == 0) return;
  const double v[2] = {t.loss, static_cast<double>(t.correct)};
  copy_bytes(sums_.get(), device_, v, Device::CPU, sizeof v);
  images = t.images;
}

void sgd_momentum(Device d, float* params, const float* grads, float* velocity, const ParamRanges& ranges, float lr,
                  float mu) {
  HG_ON_DEVICE(d, sgd_momentum_step, params, grads, velocity, ranges, lr, mu);
}

void gather_labels(Device d, int32_t* dst, const int32_t* src, const int64_t* idx, int64_t rows) {
  HG_ON_DEVICE(d, gather_i32, dst, src, idx, rows);
}

void gather_pixels(Device d, float* dst, const uint8_t* src, const int64_t* idx, int64_t rows, int64_t len,
                   PixelScale s) {
  HG_ON_DEVICE(d, gather_pixels, dst, src, idx, rows, len, s);
}

// ---- The Q2 network -------------------------------------------------------------------------

void linear_row_forward(Device d, float* y, RowSource x, const float* W, const LinearRowShape& s) {
  HG_ON_DEVICE(d, linear_row_forward, y, x, W, s);
}

void linear_row_backward_weight(Device d, float* dW, RowSource x, const float* dy, const LinearRowShape& s) {
  HG_ON_DEVICE(d, linear_row_backward_weight, dW, x, dy, s);
}

void linear_row_backward_input(Device d, float* dx, const float* dy, const float* W, const LinearRowShape& s) {
  HG_ON_DEVICE(d, linear_row_backward_input, dx, dy, W, s);
}

void relu_forward(Device d, float* y, const float* x, int64_t n) { HG_ON_DEVICE(d, relu_forward, y, x, n); }

void relu_backward(Device d, float* dx, const float* dy, const float* x, int64_t n) {
  HG_ON_DEVICE(d, relu_backward, dx, dy, x, n);
}

void mse_loss_grad(Device d, float* loss_log, int64_t log_stride, const int64_t* step, float* dyhat, const float* yhat,
                   RowSource target, int64_t models) {
  HG_ON_DEVICE(d, mse_loss_grad, loss_log, log_stride, step, dyhat, yhat, target, models);
}

void sgd_step(Device d, float* params, const float* grads, const float* lr, int64_t groups, int64_t n,
              int64_t* advance_step) {
  if (d == Device::CPU) {
    cpu::sgd_step(params, grads, lr, groups, n);
    if (advance_step) ++*advance_step;
    return;
  }
  HG_CUDA(void, sgd_step, params, grads, lr, groups, n, advance_step);
}

bool mlp_fused_fits(Device d, int64_t dim, int64_t hidden) {
  return d == Device::CUDA && HG_CUDA(bool, mlp_fused_fits, dim, hidden);
}

void mlp_train_fused(Device d, float* params, float* losses, int64_t* diverged_at, const MlpRun& r) {
  HG_REQUIRE(d == Device::CUDA, "the fused MLP trainer runs on the GPU");
  HG_CUDA(void, mlp_train_fused, params, losses, diverged_at, r);
}

}  // namespace handgrad::nn
