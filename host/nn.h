// The neural-network layers a model calls, on either device: each takes the Device its pointers
// live on and sends the call to the CPU twin or the CUDA kernel (kernels/nn, kernels/einsum,
// kernels/optim state the math; every layer is channels-last, [rows, C] with rows = N*H*W, on
// both devices). What a layer keeps per device lives here too, in its context object: Conv2d
// holds its shape and its weights packed for the device's library (oneDNN's blocked layout on
// the CPU, cuDNN's KRSC on the GPU). A model includes this header and never names cpu:: or
// cuda::.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "host/memory.h"
#include "host/tensor.h"
#include "kernels/einsum/gemm.h"
#include "kernels/mlp/mlp_train.h"
#include "kernels/nn/batchnorm.h"
#include "kernels/nn/conv2d.h"
#include "kernels/nn/conv2d_taps.h"
#include "kernels/nn/linear_row.h"
#include "kernels/nn/pooling.h"
#include "kernels/nn/rows.h"
#include "kernels/optim/sgd.h"

namespace handgrad::nn {

// A convolution layer's per-device context. Each direction runs the lowering conv2d_lowering()
// picks for the shape (the library's convolution or the tap-exact GEMMs); forward / backward
// data read the weights through the packed copies those lowerings need, re-packed on first use
// after weights_changed().
class Conv2d {
 public:
  Conv2d() = default;
  // On the CPU its packed weights are counted in `host_tally` (when given) before they are made.
  Conv2d(const Conv2dShape& shape, Device device, bool tf32, MemoryTally* host_tally = nullptr);
  Conv2dShape shape;
  // Scratch a call needs, in floats, for the current shape.N (the caller owns it, shared by
  // every layer: size it by the largest).
  int64_t workspace_floats() const;
  // The im2col rows forward can keep for backward filter, in floats for a batch of `images`
  // (conv2d_taps_im2col_floats; 0 unless both directions run the tap-exact group path). A caller
  // that gives forward a buffer this large for shape.N (one per layer: the rows of its input) and
  // backward filter the same one, with the same input, saves backward filter's gather.
  int64_t keepable_im2col_floats(int64_t images) const;
  void forward(float* y, const float* x, const float* w, float* workspace, float* keep_im2col = nullptr);
  void backward_data(float* dx, const float* dy, const float* w, float* workspace);
  void backward_filter(float* dw, const float* dy, const float* x, float* workspace, const float* kept_im2col = nullptr);
  void weights_changed() { stale_ = true; }
  // Whether the packed copy is out of date, and putting that back: a replayed step (StepGraph)
  // leaves the host's books as a GPU replay does, which runs none of the host's code.
  bool packed_stale() const { return stale_; }
  void restore_packed_stale(bool stale) { stale_ = stale; }

 private:
  const float* packed(const float* w, ConvLowering lowering);
  // Whether a direction that reads packed weights (forward, backward data) runs this lowering.
  bool reads_packed(ConvLowering l) const { return forward_ == l || backward_data_ == l; }
  Device device_ = Device::CPU;
  bool tf32_ = false;
  ConvLowering forward_, backward_data_, backward_filter_;
  Tensor packed_library_, packed_taps_;  // the weights as each lowering reads them (one float if unused)
  bool stale_ = true;
};

// Convolution algorithms on the GPU: by cuDNN's heuristics, or chosen by timing (cudnnFind), for
// the convolutions run after the call; the chosen ones, a line per shape (empty on the CPU).
void set_conv_algo_search(Device device, bool timed);
std::vector<std::string> conv_algorithms_chosen(Device device);

// BatchNorm, channels-last (batchnorm.h).
int64_t batchnorm_workspace_floats(Device d, int64_t rows, int64_t C);
void batchnorm_stats(Device d, float* save_mean, float* save_invstd, float* running_mean, float* running_var,
                     const float* x, int64_t rows, int64_t C, float* workspace);
void batchnorm_scale_shift(Device d, float* scale, float* shift, const float* gamma, const float* beta,
                           const float* mean, const float* invstd, int64_t C);
void batchnorm_eval_scale_shift(Device d, float* scale, float* shift, const float* gamma, const float* beta,
                                const float* running_mean, const float* running_var, int64_t C);
void scale_shift_relu(Device d, float* y, const float* x, const float* scale, const float* shift, const float* x2,
                      const float* scale2, const float* shift2, const float* residual, int64_t rows, int64_t C);
void batchnorm_backward(Device d, float* dx, float* dgamma, float* dbeta, const float* dy, const float* relu_out,
                        const float* x, const float* gamma, const float* save_mean, const float* save_invstd,
                        int64_t rows, int64_t C, float* workspace);
// The residual join's backward: dx += dy * [y > 0], or dx += dy where y is null.
void add_relu_backward(Device d, float* dx, const float* dy, const float* y, int64_t n);

// Pooling, channels-last (pooling.h).
void maxpool_forward(Device d, float* y, int32_t* argmax, const float* x, const Pool2dShape& s);
void maxpool_backward(Device d, float* dx, const float* dy, const int32_t* argmax, const Pool2dShape& s);
void global_avgpool_forward(Device d, float* y, const float* x, int64_t N, int64_t HW, int64_t C);
void global_avgpool_backward(Device d, float* dx, const float* dy, int64_t N, int64_t HW, int64_t C);

// The classifier: C = A B (gemm.h), y[n, :] += b, the column sums of x [rows, cols] (with
// column_sums_workspace_floats(rows_max, cols) floats of scratch), and softmax cross-entropy
// whose summed loss and right answers are added to sums[0], sums[1] (two doubles on the
// device: no copy, no synchronisation; row_loss and row_correct: N floats and N int32 of scratch).
void gemm(Device d, float* C, const float* A, const float* B, const GemmShape& s);
void add_row_bias(Device d, float* y, const float* b, int64_t N, int64_t K);
int64_t column_sums_workspace_floats(Device d, int64_t rows_max, int64_t cols);
void column_sums(Device d, float* out, const float* x, int64_t rows, int64_t cols, float* workspace);
void softmax_xent(Device d, float* dz, double* sums, float* row_loss, int32_t* row_correct, const float* z,
                  const int32_t* labels, int64_t N, int64_t K);
// Those two sums, and the images they cover, kept on the device until someone asks: no copy and
// no synchronisation in a training step.
class LossSums {
 public:
  struct Taken {
    double loss = 0;  // summed over images
    int64_t images = 0, correct = 0;
  };
  explicit LossSums(Device d);
  double* on_device() { return static_cast<double*>(sums_.get()); }
  int64_t images = 0;  // the caller counts the images it adds
  Taken take();                // read and zero (synchronises)
  void put_back(const Taken& t);  // what take() returned goes back in
 private:
  void zero();
  Device device_;
  Buffer sums_;
};

// PyTorch's SGD with momentum over the ranges of one flat buffer (sgd.h).
void sgd_momentum(Device d, float* params, const float* grads, float* velocity, const ParamRanges& ranges, float lr,
                  float mu);

// The data pipeline: a batch's labels dst[i] = src[idx[i]] (int32), and its images, kept as bytes,
// made float as they are gathered (rows.h; idx null: rows in order).
void gather_labels(Device d, int32_t* dst, const int32_t* src, const int64_t* idx, int64_t rows);
void gather_pixels(Device d, float* dst, const uint8_t* src, const int64_t* idx, int64_t rows, int64_t len,
                   PixelScale s);

// The Q2 network's layers, for every model of a learning-rate sweep at once (linear_row.h,
// relu.h, mse.h), and its updates: plain SGD per model (sgd.h), whose `advance_step` counter
// (on the device, may be null) moves on after the update; the whole run in one fused kernel
// where one model's weights fit in a block's shared memory (mlp_train.h; the GPU only).
void linear_row_forward(Device d, float* y, RowSource x, const float* W, const LinearRowShape& s);
void linear_row_backward_weight(Device d, float* dW, RowSource x, const float* dy, const LinearRowShape& s);
void linear_row_backward_input(Device d, float* dx, const float* dy, const float* W, const LinearRowShape& s);
void relu_forward(Device d, float* y, const float* x, int64_t n);
void relu_backward(Device d, float* dx, const float* dy, const float* x, int64_t n);
void mse_loss_grad(Device d, float* loss_log, int64_t log_stride, const int64_t* step, float* dyhat, const float* yhat,
                   RowSource target, int64_t models);
void sgd_step(Device d, float* params, const float* grads, const float* lr, int64_t groups, int64_t n,
              int64_t* advance_step);
bool mlp_fused_fits(Device d, int64_t dim, int64_t hidden);
void mlp_train_fused(Device d, float* params, float* losses, int64_t* diverged_at, const MlpRun& r);

}  // namespace handgrad::nn
