// Q2: the autograd-free two-layer MLP (kernels/mlp/mlp_train.h has the math). This is the
// trainer around the kernels: data (generated from Philox streams or replayed from .npy
// files), the memory plan, the four implementations, divergence handling, and the outputs
// (Q2_output.txt, mlp_loss.csv, question2_result.pdf, mlp_summary.json).
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/device.h"
#include "host/tensor.h"

namespace handgrad {

// The best of the sweep on the default problem (lowest mean loss over the last 1000 iterations
// and lowest full-dataset MSE among 1e-6..0.03); the course's suggested 0.03 diverges within 4
// iterations there, as every lr >= 1e-3 does (in PyTorch too). See the README's sweep.
constexpr float kMlpDefaultLr = 1e-5f;

struct MlpConfig {
  int64_t n = 500, d = 64, h = 64, iters = 100000, log_every = 100;
  std::vector<float> lrs = {kMlpDefaultLr};
  uint64_t seed = 2024;
  Device device = Device::CPU;
  std::string impl = "auto";  // auto | cpu | kernels | graph | fused
  std::string out_dir = "results";
  bool plot = true;
  bool write_files = true;
  // Replay inputs (any may be empty): float32 X [n, d], Y [n] or [n, 1], W1 [d, h],
  // W2 [h] or [h, 1]; int64 indices [>= iters], each in [0, n).
  std::string x_path, y_path, w1_path, w2_path, indices_path;
  std::string save_weights_dir;  // writes W1.npy, W2.npy of the best model
  // In-memory inputs (the Python module), in place of the files above: CPU tensors of the same
  // shapes and dtypes, read in place (they must outlive the run; indices are copied).
  const Tensor *x = nullptr, *y = nullptr, *w1 = nullptr, *w2 = nullptr, *indices = nullptr;
  // A run where every model diverges is a UserError naming the iteration (the CLI); false
  // returns the result with best = -1 instead.
  bool throw_if_all_diverge = true;
  // Called between blocks of iterations on the CPU (it may throw to stop the run: Ctrl-C in
  // Python); the GPU trainers run to the end in one go.
  std::function<void()> between_blocks;
};

struct MlpModelResult {
  float lr = 0;
  int64_t diverged_at = -1;  // iteration (0-based) whose loss was not finite or exploded
  double final_loss = 0, last1000_mean = 0, dataset_mse = 0;
  std::vector<float> losses;   // every iteration's loss
  std::vector<float> params;   // W1 (d x h) then W2 (h)
};

struct MlpResult {
  std::string impl;
  Device device = Device::CPU;
  int64_t n = 0, d = 0, h = 0;  // the sizes trained (replayed inputs fix them)
  double seconds = 0, us_per_iter = 0;
  int best = -1;  // the converged model with the lowest mean loss over the last 1000 iterations
  std::vector<MlpModelResult> models;
  std::vector<std::string> files_written;  // paths, in the order written (a failed plot is not one)
};

// Validates the config (UserError on bad input), trains, writes the outputs unless
// write_files is false. A single-lr run that diverges throws UserError naming the iteration.
MlpResult run_mlp(const MlpConfig& cfg);

// "kernels" | "graph" | "fused" | "cpu" for a config's impl on its device ("auto" resolved).
std::string resolve_mlp_impl(const std::string& impl, Device device);

}  // namespace handgrad
