// torchvision's ResNet18, adapted to 1-channel input and 10 classes: 7x7/2 conv, BN, ReLU,
// 3x3/2 max-pool, four stages of two BasicBlocks (1x1/2 conv + BN downsampling where the shape
// changes), global average pool, fc. Written once for both devices, channels-last on both: on
// the CPU on oneDNN's convolutions and the kernels' CPU twins, on the GPU on cuDNN's and
// handgrad's CUDA kernels, every layer through host/nn.h.
//
// One memory plan: parameters, gradients and momentum live in one flat buffer each, laid out
// in torchvision's state-dict order; BN running statistics in another; activations are
// allocated once for the batch size. Names and shapes follow torchvision exactly, so state
// dicts move between handgrad and PyTorch unchanged.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "host/checkpoint.h"
#include "host/nn.h"
#include "host/tensor.h"

namespace handgrad {

// Every convolution of the network for a batch of [batch, in_channels, height, width] images, by
// state-dict name ("conv1", "layer2.0.downsample.0", ...), in forward order: what benchmarks and
// tests sweep.
std::vector<std::pair<std::string, Conv2dShape>> resnet18_conv_shapes(int64_t batch, int64_t height, int64_t width,
                                                                      int64_t in_channels = 1);

// Every entry of the network's state dict, by name, with its shape ({} for a BatchNorm's
// num_batches_tracked), in torchvision's order: what a checkpoint is checked against before any
// of it is copied.
std::vector<std::pair<std::string, Shape>> resnet18_state_shapes(int64_t in_channels = 1, int64_t classes = 10);

class ResNet18 {
 public:
  // `tf32`: let cuDNN use TF32 tensor cores for the convolutions (GPU only; FP32 otherwise).
  ResNet18(int64_t batch, int64_t height, int64_t width, Device device = Device::CPU, bool tf32 = false,
           int64_t in_channels = 1, int64_t classes = 10);
  ~ResNet18();
  ResNet18(const ResNet18&) = delete;
  ResNet18& operator=(const ResNet18&) = delete;

  // torchvision's initialisation: conv kaiming_normal(fan_out, relu), BN (1, 0), Linear's
  // default uniform(+-1/sqrt(fan_in)) for fc weight and bias; from Philox streams of `seed`.
  void init_random(uint64_t seed);
  // Takes every tensor of `sd` whose name and shape match; a name with another shape, or (when
  // `strict`) a missing or unknown name, is a UserError naming the key.
  void load(const StateDict& sd, bool strict);
  StateDict state_dict() const;                // parameters, running stats, num_batches_tracked
  // What state_dict() holds, from a model of the same channels and classes (sized for other
  // images), copied directly.
  void copy_weights(const ResNet18& from);
  StateDict momentum_state() const;            // "<param>" -> momentum buffer (trainable ones)

  // "backbone": only conv1 and fc train (the course's setting); "none": everything trains.
  void set_freeze(const std::string& mode);

  // Forward over n <= batch images [n, C, H, W] with int32 labels, both on the model's device.
  // Train mode uses batch statistics and updates the running ones; it needs more than one value
  // per channel at every BatchNorm (at 28x28, n >= 2), a UserError otherwise, as in PyTorch. The batch's summed
  // cross-entropy loss and right answers are added to running sums that stay on the device
  // (no copy, no synchronisation) until take_sums() reads and clears them.
  void enqueue_forward(const float* images, const int32_t* labels, int64_t n, bool train);
  using Sums = nn::LossSums::Taken;  // loss summed over images, images, right answers
  Sums take_sums();
  // The mean loss of this batch and, in *correct, its right answers, at once (evaluation, tests);
  // running sums already pending are left as they were.
  double forward(const float* images, const int32_t* labels, int64_t n, bool train, int64_t* correct);
  // The last forward's logits [n, classes], copied to the host.
  std::vector<float> logits() const;
  // The last forward's branch decisions, copied to the host, for parity tests that make a
  // reference take the same branches: every ReLU's output ("relu" for the stem,
  // "layerS.B.relu1" / "layerS.B.relu2" inside a block; the backward passes a gradient where
  // it is > 0) and the max-pool's winners ("maxpool.indices", int64, index into the input
  // plane, as PyTorch's return_indices).
  StateDict branches() const;
  // Gradients of the trainable parameters for the last train-mode forward.
  void backward();
  // PyTorch's SGD with momentum over the trainable parameters.
  void sgd_step(float lr, float momentum);
  // One training step (train-mode forward, backward, SGD) on a full batch. On the GPU it is
  // captured into a CUDA graph and replayed after: one launch instead of ~300. On the CPU the
  // step is recorded and rerun (StepGraph), with the same bookkeeping, so that the CPU tests run
  // this logic too (the trainer replays on the GPU only). Capture waits for one eager full-batch
  // training step (this call runs it when none has), which makes every convolution plan. Images
  // and labels must sit at the same device addresses on every call (the caller's batch buffers;
  // other addresses or another lr re-capture; load, init_random and set_freeze drop the graph).
  // Returns false when the step ran eagerly (the first step, or a capture that failed:
  // graph_disabled_reason() says why).
  bool train_step_graphed(const float* images, const int32_t* labels, float lr, float momentum);
  std::string graph_disabled_reason() const;

  // Where a step's time goes: while profiling is on, each layer call's wall time is added to its
  // family's total ("conv forward", "batchnorm backward", "sgd", ...). On the GPU the device is
  // synchronised around every call (which slows the step down) and graph replay is off.
  void set_profiling(bool on);
  std::vector<std::pair<std::string, double>> profile_seconds() const;  // in the order of a step

  struct Impl;

 private:
  Impl* impl_;
};

}  // namespace handgrad
