// Q3: transfer learning of ResNet18 on FashionMNIST - the data pipeline, the training and
// evaluation loops, the grid search, checkpoints and the outputs (CSV, PDF, JSON).
#pragma once
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "host/checkpoint.h"
#include "host/device.h"

namespace handgrad {

// FashionMNIST's pixel mean and std (of ToTensor()'s [0, 1] values): what `normalize`
// standardises with (pixel - mean) / std. The Python module exports them for a model's callers.
constexpr float kFashionMnistMean = 0.2860f, kFashionMnistStd = 0.3530f;

// Where a training run stands, after each step (TransferConfig::on_step).
struct TransferProgress {
  int64_t epoch = 0, epochs = 0, step = 0, steps = 0;  // 1-based
  double loss = NAN;                                  // the last logged mean loss (NaN before the first)
  double images_per_second = 0, eta_seconds = 0;
};

struct TransferConfig {
  std::string weights;     // "" search the torch hub caches, "none" random init, else a path
  std::string checkpoint;  // an adapted model (1-channel conv1, 10-class fc); overrides weights
  std::string conv1_init = "rgb-sum";  // rgb-sum | random
  std::string freeze = "backbone";     // backbone | none
  // The best of the grid measured on this project's machine (README): batch 16, lr 0.01, no momentum.
  int64_t batch_size = 16;
  float lr = 0.01f, momentum = 0.f;
  int64_t epochs = 2, max_steps = 0;  // max_steps > 0 stops early
  int64_t max_samples = 0;             // > 0: stop after this many images (a grid budget fair to every batch size)
  bool shuffle = true, eval = true, normalize = false, grid = false;
  uint64_t seed = 2024;
  std::string data_dir;
  Device device = Device::CPU;
  std::string out_dir = "results";
  std::string save_checkpoint, save_momentum;
  std::string dump_branches;  // a folder: each step's ReLU outputs and max-pool winners (parity tests)
  int64_t log_every = 20;
  int64_t eval_limit = 0;  // 0: the whole test set
  bool plot = true, progress = true;  // progress: lines on stderr while it trains (host/progress.h)
  bool tf32 = false;  // GPU: TF32 tensor-core convolutions (PyTorch's default); FP32 otherwise
  bool cudnn_find = false;  // GPU: choose convolution algorithms by timing them (cudnnFind), not by heuristics
  bool cuda_graph = false;  // GPU: replay each full-batch training step from a CUDA graph
  bool profile = false;     // time each layer family over the steady steps (ResNet18::set_profiling)
  std::string pdf_name = "question3_result.pdf";
  std::string label;  // shown in titles and summaries, e.g. "reduced grid: 150 steps per configuration"
  // The Python module's hooks: a starting state dict (an adapted model, as --checkpoint), a call
  // after every step (it may throw to stop the run: Ctrl-C), the trained state dict kept in the
  // result, and no files or summary lines.
  const StateDict* initial_state = nullptr;
  std::function<void(const TransferProgress&)> on_step;
  std::function<void()> between_eval_batches;  // called between evaluation batches (it may throw: Ctrl-C)
  bool keep_state = false;
  bool write_files = true;
};

struct TransferResult {
  int64_t batch_size = 0;
  float lr = 0, momentum = 0;
  std::string weights;  // what the run started from
  double final_train_loss = 0;  // mean of the last 5 logged losses
  double test_loss = 0, test_accuracy = 0;
  double seconds = 0, images_per_second = 0;  // the whole run, evaluations included
  double steady_ms_per_step = 0;  // training steps after the first 5, without evaluations (NaN: too few)
  int64_t steps = 0;
  double eval_seconds = 0;  // the evaluations' part of `seconds`
  int64_t eval_images = 0;  // test images evaluated, all evaluations together
  int64_t train_set_size = 0, test_set_size = 0;  // the dataset's, before any limit
  std::vector<std::pair<int64_t, double>> loss_curve;  // (samples seen, loss)
  std::vector<std::pair<std::string, double>> profile_ms_per_step;  // --profile: (layer family, ms)
  std::shared_ptr<StateDict> state;  // the trained model (TransferConfig::keep_state)
};

// The torchvision ImageNet checkpoint in the torch hub caches, or "" when there is none.
std::string locate_imagenet_weights();

// `handgrad transfer train` (one configuration, or the grid when cfg.grid).
TransferResult run_transfer_train(const TransferConfig& cfg);

// How long run_transfer_train(cfg) (one configuration) should take on this machine, from the speeds
// a run with the same batch size and device measured (training steps, evaluated images); NaN when
// that run measured nothing.
double estimate_transfer_seconds(const TransferConfig& cfg, const TransferResult& measured);

struct TransferEvalConfig {
  std::string checkpoint, data_dir, dump_logits;
  int64_t limit = 0, batch_size = 256;
  bool normalize = false, tf32 = false, cudnn_find = false;
  Device device = Device::CPU;
  const StateDict* state = nullptr;  // in place of the checkpoint file (the Python module)
  bool quiet = false;                // no progress and no summary line
  std::function<void()> between_batches;  // called between batches (it may throw: Ctrl-C)
};
// `handgrad transfer eval`: returns {test loss, accuracy}.
std::pair<double, double> run_transfer_eval(const TransferEvalConfig& cfg);

}  // namespace handgrad
