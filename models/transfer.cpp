#include "models/transfer.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "host/atomic_file.h"
#include "host/checkpoint.h"
#include "host/idx.h"
#include "host/nn.h"
#include "host/npy.h"
#include "host/plot.h"
#include "host/progress.h"
#include "kernels/philox.h"
#include "models/resnet18.h"

namespace handgrad {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

namespace {

// A dataset split on the device that trains on it: the images [count, 1, H, W] as their bytes
// (uint8: 47 MB for the training set, not 188 MB of floats), each batch made float as ToTensor()
// gives it (pixel / 255, standardised by `scale` or not) as it is gathered; int32 labels.
struct Split {
  int64_t count = 0, rows = 0, cols = 0, hw = 0;
  Buffer pixels, labels;
  PixelScale scale;
  const uint8_t* pixel_rows() const { return static_cast<const uint8_t*>(pixels.get()); }
  const int32_t* label(int64_t i) const { return static_cast<const int32_t*>(labels.get()) + i; }
};

Split to_split(const IdxImages& im, const std::vector<uint8_t>& labels, bool normalize, int64_t limit, Device dev) {
  Split s;
  s.count = limit > 0 ? std::min<int64_t>(limit, im.count) : im.count;
  s.rows = im.rows, s.cols = im.cols, s.hw = im.rows * im.cols;
  s.scale.normalize = normalize, s.scale.mean = kFashionMnistMean, s.scale.std = kFashionMnistStd;
  s.pixels = Buffer(static_cast<size_t>(std::max<int64_t>(s.count * s.hw, 1)), dev);  // uploaded once
  copy_bytes(s.pixels.get(), dev, im.pixels.data(), Device::CPU, static_cast<size_t>(s.count * s.hw));
  std::vector<int32_t> lab(labels.begin(), labels.begin() + s.count);
  s.labels = Buffer(sizeof(int32_t) * std::max<int64_t>(s.count, 1), dev);
  copy_bytes(s.labels.get(), dev, lab.data(), Device::CPU, sizeof(int32_t) * s.count);
  return s;
}

std::string find_imagenet_weights() {
  const std::string path = locate_imagenet_weights();
  if (!path.empty()) return path;
  throw UserError(
      "ImageNet weights for ResNet18 not found (looked for resnet18-f37072fd.pth in $TORCH_HOME/hub/checkpoints "
      "and ~/.cache/torch/hub/checkpoints): download https://download.pytorch.org/models/resnet18-f37072fd.pth "
      "there or pass --weights PATH (.pth or .safetensors); --weights none starts from torchvision's random init");
}

// The model's initial weights: an adapted checkpoint, or ImageNet weights adapted to 1 channel
// (conv1) and 10 classes (fc, always fresh), or torchvision's random init.
void init_model(ResNet18& model, const TransferConfig& cfg) {
  model.init_random(cfg.seed);
  if (cfg.initial_state) {
    model.load(*cfg.initial_state, /*strict=*/true);
    return;
  }
  if (!cfg.checkpoint.empty()) {
    model.load(read_state_dict(cfg.checkpoint), /*strict=*/true);
    return;
  }
  if (cfg.weights == "none") return;
  const std::string path = cfg.weights.empty() ? find_imagenet_weights() : cfg.weights;
  StateDict pre = read_state_dict(path);
  StateDict adapted;
  for (auto& [name, t] : pre.entries) {
    if (name.rfind("fc.", 0) == 0) continue;  // fc is always fresh: 10 classes, not 1000
    if (name == "conv1.weight") {
      if (cfg.conv1_init == "random") continue;
      HG_REQUIRE(t.dtype() == DType::F32, path, ": conv1.weight is ", dtype_name(t.dtype()), ", expected float32");
      HG_REQUIRE(t.ndim() == 4 && t.shape()[1] == 3, path, ": conv1.weight has shape ", shape_str(t.shape()),
                 ", expected ImageNet's [64, 3, 7, 7]");
      // rgb-sum: a gray pixel g is the RGB pixel (g, g, g), so summing the RGB filters keeps
      // conv1's response to gray images exactly what it was.
      Tensor sum = Tensor::zeros({t.shape()[0], 1, t.shape()[2], t.shape()[3]});
      const int64_t plane = t.shape()[2] * t.shape()[3];
      for (int64_t k = 0; k < t.shape()[0]; ++k)
        for (int64_t c = 0; c < 3; ++c)
          for (int64_t i = 0; i < plane; ++i) sum.data<float>()[k * plane + i] += t.data<float>()[(k * 3 + c) * plane + i];
      adapted.add(name, std::move(sum));
      continue;
    }
    adapted.add(name, std::move(t));
  }
  for (const auto& [name, t] : model.state_dict().entries)
    if (name.rfind("fc.", 0) != 0 && name != "conv1.weight")
      HG_REQUIRE(adapted.find(name) != nullptr, path, ": not a torchvision ResNet18 state dict (no '", name, "')");
  model.load(adapted, /*strict=*/false);
}

// The steps a run of `cfg` trains on `train_count` images.
int64_t training_steps(const TransferConfig& cfg, int64_t train_count) {
  const int64_t steps_per_epoch = (train_count + cfg.batch_size - 1) / cfg.batch_size;
  int64_t total_steps = steps_per_epoch * cfg.epochs;  // < 2^16 x 10^6: no overflow
  if (cfg.max_steps > 0) total_steps = std::min(total_steps, cfg.max_steps);
  if (cfg.max_samples > 0)
    total_steps = std::min(total_steps, cfg.max_samples / cfg.batch_size + (cfg.max_samples % cfg.batch_size != 0));
  return total_steps;
}

// Evaluation over a split: {mean loss, accuracy}. With `progress`, a progress line labelled `label`
// while it runs (taken away at the end: the caller prints the result).
std::pair<double, double> evaluate(ResNet18& model, const Split& s, int64_t batch, std::vector<float>* logits,
                                   const std::string& label = "", bool progress = false,
                                   const std::function<void()>& between_batches = {}) {
  Progress shown(label, s.count, progress);
  double loss = 0;
  int64_t right = 0;
  if (logits) logits->assign(s.count * 10, 0.f);
  Tensor images = Tensor::empty({std::min(batch, s.count) * s.hw}, s.pixels.device());
  for (int64_t b = 0; b < s.count; b += batch) {
    if (between_batches && b > 0) between_batches();
    const int64_t n = std::min(batch, s.count - b);
    int64_t c = 0;
    nn::gather_pixels(s.pixels.device(), images.data<float>(), s.pixel_rows() + b * s.hw, nullptr, n, s.hw, s.scale);
    loss += model.forward(images.data<float>(), s.label(b), n, /*train=*/false, &c) * n;
    right += c;
    if (logits) {
      const std::vector<float> l = model.logits();
      std::copy(l.begin(), l.end(), logits->begin() + b * 10);
    }
    shown.update(b + n, cat("evaluating: ", b + n, "/", s.count, " test images"));
  }
  shown.clear();
  return {loss / s.count, double(right) / s.count};
}

struct RunOutput {
  TransferResult result;
  std::vector<std::pair<int, std::pair<double, double>>> epoch_eval;  // epoch -> (loss, acc)
};

RunOutput train_one(const TransferConfig& cfg, const Split& train, const Split& test, const std::string& label) {
  // Beyond the training set a batch means nothing; the cap also keeps every activation's size
  // (batch x channels x height x width, 4096-pixel sides at most) far inside int64.
  constexpr int64_t kMaxBatch = 65536;
  HG_REQUIRE(cfg.batch_size > 0 && cfg.batch_size <= kMaxBatch, "--batch-size must be in [1, ", kMaxBatch, "], got ",
             cfg.batch_size);
  HG_REQUIRE(std::isfinite(cfg.lr) && cfg.lr > 0, "--lr must be positive, got ", cfg.lr);
  HG_REQUIRE(cfg.momentum >= 0 && cfg.momentum < 1, "--momentum must be in [0, 1), got ", cfg.momentum);
  constexpr int64_t kMaxEpochs = 1000000;  // beyond, a run would not end in this machine's lifetime
  HG_REQUIRE(cfg.epochs > 0 && cfg.epochs <= kMaxEpochs, "--epochs must be in [1, ", kMaxEpochs, "], got ", cfg.epochs);
  HG_REQUIRE(cfg.max_steps >= 0, "--max-steps must not be negative");
  // Refused before the first step (and before the network is sized), not at the end of an epoch: a
  // batch of one image (the batch size, or what an epoch leaves for its last step) gives layer4's
  // BatchNorm one value per channel on small images, which PyTorch refuses to train on.
  {
    const Conv2dShape layer4 = resnet18_conv_shapes(1, train.rows, train.cols).back().second;
    const int64_t steps_per_epoch = (train.count + cfg.batch_size - 1) / cfg.batch_size;
    const int64_t first = std::min(cfg.batch_size, train.count), last = train.count % cfg.batch_size;
    for (const int64_t n : {first, training_steps(cfg, train.count) >= steps_per_epoch ? last : int64_t(0)})
      HG_REQUIRE(n == 0 || n * layer4.OH() * layer4.OW() > 1, "--batch-size ", cfg.batch_size, ": a training batch of ",
                 n, " image", n == 1 ? "" : "s", " of ", train.rows, "x", train.cols,
                 " gives layer4's BatchNorm 1 value per channel (PyTorch: \"Expected more than 1 value per channel ",
                 "when training\")", n == cfg.batch_size ? "" : cat(": the last of the ", train.count,
                 " training images; choose another batch size"));
  }
  ResNet18 model(cfg.batch_size, train.rows, train.cols, cfg.device, cfg.tf32);
  init_model(model, cfg);
  model.set_freeze(cfg.freeze);

  RunOutput out;
  const int64_t total_steps = training_steps(cfg, train.count);
  // One file per step: meant for the few steps of a parity test, not for a whole run.
  constexpr int64_t kMaxDumpSteps = 100;
  HG_REQUIRE(cfg.dump_branches.empty() || total_steps <= kMaxDumpSteps, "--dump-branches writes one file per step: ",
             "limit the run to ", kMaxDumpSteps, " steps (--max-steps), not ", total_steps);
  if (!cfg.dump_branches.empty()) fs::create_directories(cfg.dump_branches);
  std::vector<int64_t> order(train.count);
  Tensor order_dev = Tensor::empty({train.count}, cfg.device, DType::I64);
  Tensor batch_images = Tensor::empty({cfg.batch_size * train.hw}, cfg.device);
  Buffer batch_labels(sizeof(int32_t) * cfg.batch_size, cfg.device);
  const Device dev = cfg.device;
  const auto t0 = std::chrono::steady_clock::now();
  auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  // The steady step time leaves out the first kWarmupSteps steps (cuDNN handles and plans, lazy
  // module loading, first-touch allocations) and the evaluations; the device is synchronised at
  // the edges of each timed stretch, not inside it.
  constexpr int64_t kWarmupSteps = 5;
  double steady_seconds = 0, stretch_start = -1;
  int64_t steady_steps = 0;
  auto timed_stretch = [&](bool start) {
    if (start == (stretch_start >= 0)) return;
    synchronize(dev);
    if (start) stretch_start = elapsed();
    else steady_seconds += elapsed() - stretch_start, stretch_start = -1;
  };
  int64_t step = 0, seen = 0, window_steps = 0;
  bool use_graph = cfg.cuda_graph && dev == Device::CUDA && cfg.dump_branches.empty();
  bool graph_ready = false;  // an eager full-batch step has run: the step can be captured
  Progress progress(label, total_steps, cfg.progress);
  double eval_seconds = 0;  // evaluations so far (not in the training speed shown)
  for (int64_t epoch = 0; epoch < cfg.epochs && step < total_steps; ++epoch) {
    for (int64_t i = 0; i < train.count; ++i) order[i] = i;
    if (cfg.shuffle) {  // Fisher-Yates from a Philox stream per epoch: same seed, same order
      const Philox rng(cfg.seed, 1000 + epoch);
      for (int64_t i = train.count - 1; i > 0; --i)
        std::swap(order[i], order[static_cast<int64_t>(rng.uniform_int(i, i + 1))]);
    }
    copy_bytes(order_dev.raw(), dev, order.data(), Device::CPU, sizeof(int64_t) * train.count);
    for (int64_t b = 0; b < train.count && step < total_steps; b += cfg.batch_size, ++step) {
      const int64_t n = std::min(cfg.batch_size, train.count - b);
      if (step >= kWarmupSteps) timed_stretch(true), ++steady_steps, model.set_profiling(cfg.profile);
      // Gather the batch where the data lives (on the GPU the dataset was uploaded once).
      const int64_t* idx = order_dev.data<int64_t>() + b;
      int32_t* labels = static_cast<int32_t*>(batch_labels.get());
      const int32_t* all_labels = static_cast<const int32_t*>(train.labels.get());
      nn::gather_pixels(dev, batch_images.data<float>(), train.pixel_rows(), idx, n, train.hw, train.scale);
      nn::gather_labels(dev, labels, all_labels, idx, n);
      // With --cuda-graph a full batch replays the captured step, once an eager full-batch step
      // has planned every convolution and loaded every kernel.
      if (graph_ready && n == cfg.batch_size) {
        if (!model.train_step_graphed(batch_images.data<float>(), labels, cfg.lr, cfg.momentum)) {
          std::fprintf(stderr, "[%s] --cuda-graph: the step could not be captured (%s); running it eagerly\n",
                       label.c_str(), model.graph_disabled_reason().c_str());
          use_graph = graph_ready = false;
        }
      } else {
        model.enqueue_forward(batch_images.data<float>(), labels, n, true);
        if (!cfg.dump_branches.empty())
          write_safetensors((fs::path(cfg.dump_branches) / cat("step", step + 1, ".safetensors")).string(),
                            model.branches());
        model.backward();
        model.sgd_step(cfg.lr, cfg.momentum);
        graph_ready = graph_ready || (use_graph && n == cfg.batch_size);
      }
      seen += n;
      ++window_steps;
      // The loss stays on the device between log points: reading it is the step's only sync.
      if ((step + 1) % cfg.log_every == 0 || step + 1 == total_steps) {
        const ResNet18::Sums sums = model.take_sums();
        const double loss = sums.loss / static_cast<double>(sums.images);
        HG_REQUIRE(std::isfinite(loss), "training diverged ",
                   window_steps == 1 ? cat("at step ", step + 1) : cat("in steps ", step + 2 - window_steps, "-", step + 1),
                   " (mean loss ", loss, "): try a smaller --lr");
        out.result.loss_curve.emplace_back(seen, loss);
        window_steps = 0;
      }
      if (cfg.on_step) {
        TransferProgress p;
        p.epoch = epoch + 1, p.epochs = cfg.epochs, p.step = step + 1, p.steps = total_steps;
        if (!out.result.loss_curve.empty()) p.loss = out.result.loss_curve.back().second;
        p.images_per_second = seen / std::max(elapsed(), 1e-9);
        p.eta_seconds = (total_steps - step - 1) * cfg.batch_size / std::max(p.images_per_second, 1e-9);
        cfg.on_step(p);
      }
      if (cfg.progress) {
        char loss[32] = "-";  // the last logged loss (none before the first log point)
        if (!out.result.loss_curve.empty()) std::snprintf(loss, sizeof loss, "%.4f", out.result.loss_curve.back().second);
        const std::string detail = cat("epoch ", epoch + 1, "/", cfg.epochs, " step ", step + 1, "/", total_steps,
                                       " loss ", loss, "  ", std::lround(seen / std::max(elapsed() - eval_seconds, 1e-9)),
                                       " img/s");
        if (step + 1 == total_steps) progress.finish(detail);
        else progress.update(step + 1, detail);
      }
    }
    timed_stretch(false);
    model.set_profiling(false);  // evaluations are not training steps
    if (cfg.eval) {
      progress.clear();
      const double e0 = elapsed();
      const auto [l, a] = evaluate(model, test, cfg.batch_size, nullptr, label, cfg.progress,
                                     cfg.between_eval_batches);  // sized for one batch
      eval_seconds += elapsed() - e0;
      out.result.eval_images += test.count;
      out.epoch_eval.push_back({int(epoch + 1), {l, a}});
      if (cfg.progress)
        std::fprintf(stderr, "[%s] epoch %lld: test loss %.4f, test accuracy %.2f%%\n", label.c_str(),
                     (long long)epoch + 1, l, 100 * a);
    }
  }
  out.result.batch_size = cfg.batch_size;
  out.result.lr = cfg.lr;
  out.result.momentum = cfg.momentum;
  out.result.seconds = elapsed();
  out.result.steps = step;
  out.result.eval_seconds = eval_seconds;
  out.result.train_set_size = train.count;
  out.result.images_per_second = seen / std::max(out.result.seconds, 1e-9);
  out.result.steady_ms_per_step = steady_steps > 0 ? 1e3 * steady_seconds / steady_steps : NAN;
  if (cfg.profile && steady_steps > 0)
    for (const auto& [family, seconds] : model.profile_seconds())
      out.result.profile_ms_per_step.emplace_back(family, 1e3 * seconds / steady_steps);
  const size_t k = std::min<size_t>(5, out.result.loss_curve.size());
  for (size_t i = out.result.loss_curve.size() - k; i < out.result.loss_curve.size(); ++i)
    out.result.final_train_loss += out.result.loss_curve[i].second / k;
  if (!out.epoch_eval.empty()) {
    out.result.test_loss = out.epoch_eval.back().second.first;
    out.result.test_accuracy = out.epoch_eval.back().second.second;
  }
  if (!cfg.save_checkpoint.empty()) write_safetensors(cfg.save_checkpoint, model.state_dict());
  if (!cfg.save_momentum.empty()) write_safetensors(cfg.save_momentum, model.momentum_state());
  if (cfg.keep_state) out.result.state = std::make_shared<StateDict>(model.state_dict());
  return out;
}

// GPU runs: how cuDNN's convolution algorithms are chosen, and (after the run) which were.
void choose_conv_algorithms(Device dev, bool timed) { nn::set_conv_algo_search(dev, timed); }

std::vector<std::string> conv_algorithms_chosen(Device dev) { return nn::conv_algorithms_chosen(dev); }

void report_conv_algorithms(Device dev, bool timed) {
  if (!timed) return;
  for (const std::string& line : conv_algorithms_chosen(dev)) std::fprintf(stderr, "[cudnn] %s\n", line.c_str());
}

std::string config_label(const TransferConfig& c) {
  char b[96];
  std::snprintf(b, sizeof b, "bs%lld_lr%g_m%g", (long long)c.batch_size, c.lr, c.momentum);
  return b;
}

void write_curves(const std::string& path, const std::vector<std::pair<std::string, RunOutput>>& runs) {
  std::string csv = "config,samples_seen,train_loss\n";
  for (const auto& [label, r] : runs)
    for (const auto& [s, l] : r.result.loss_curve) csv += label + "," + std::to_string(s) + "," + std::to_string(l) + "\n";
  write_file_atomic(path, csv);
}

// --profile: where the steady steps' time went, one line per layer family, on stdout.
void print_profile(const std::string& label, const TransferResult& r) {
  double total = 0;
  for (const auto& [family, ms] : r.profile_ms_per_step) total += ms;
  std::printf("[%s] profile, ms per step (mean over the steps after the first 5; %.1f ms per step in all):\n",
              label.c_str(), r.steady_ms_per_step);
  for (const auto& [family, ms] : r.profile_ms_per_step)
    std::printf("  %-22s %8.2f  %5.1f%%\n", family.c_str(), ms, total > 0 ? 100 * ms / total : 0.0);
  std::printf("  %-22s %8.2f\n", "(layers in all)", total);
}

}  // namespace

std::string locate_imagenet_weights() {
  std::vector<fs::path> dirs;
  if (const char* th = std::getenv("TORCH_HOME")) dirs.push_back(fs::path(th) / "hub" / "checkpoints");
  if (const char* home = std::getenv("HOME")) dirs.push_back(fs::path(home) / ".cache" / "torch" / "hub" / "checkpoints");
  for (const fs::path& d : dirs)
    for (const char* name : {"resnet18-f37072fd.pth", "resnet18.safetensors"}) {
      std::error_code ec;
      if (fs::is_regular_file(d / name, ec)) return (d / name).string();
    }
  return "";
}

double estimate_transfer_seconds(const TransferConfig& cfg, const TransferResult& measured) {
  if (measured.train_set_size <= 0 || measured.steps <= 0) return NAN;
  const int64_t steps = training_steps(cfg, measured.train_set_size);
  const double step_seconds = std::isfinite(measured.steady_ms_per_step)
                                  ? measured.steady_ms_per_step / 1e3
                                  : (measured.seconds - measured.eval_seconds) / measured.steps;
  double seconds = steps * step_seconds;
  if (cfg.eval && measured.eval_images > 0) {
    const int64_t steps_per_epoch = (measured.train_set_size + cfg.batch_size - 1) / cfg.batch_size;
    const int64_t epochs = (steps + steps_per_epoch - 1) / steps_per_epoch;
    const int64_t per_eval =
        cfg.eval_limit > 0 ? std::min(cfg.eval_limit, measured.test_set_size) : measured.test_set_size;
    seconds += epochs * per_eval * (measured.eval_seconds / measured.eval_images);
  }
  return seconds;
}

TransferResult run_transfer_train(const TransferConfig& cfg) {
  HG_REQUIRE(cfg.conv1_init == "rgb-sum" || cfg.conv1_init == "random", "--conv1-init must be rgb-sum or random");
  HG_REQUIRE(cfg.log_every > 0, "--log-every must be positive");
  HG_REQUIRE(cfg.eval_limit >= 0, "--eval-limit must not be negative, got ", cfg.eval_limit);
  HG_REQUIRE(cfg.max_samples >= 0, "max_samples must not be negative");
  // Every output is checked before the training: a path that cannot be written would otherwise
  // be found only after it, with the trained model lost.
  if (cfg.write_files) check_output_dir(cfg.out_dir, "--out-dir");
  check_output_file(cfg.save_checkpoint, "--save-checkpoint");
  check_output_file(cfg.save_momentum, "--save-momentum");
  check_output_dir(cfg.dump_branches, "--dump-branches");
  const FashionMnist data = load_fashion_mnist(cfg.data_dir);
  const Split train = to_split(data.train_images, data.train_labels, cfg.normalize, 0, cfg.device);
  const Split test = to_split(data.test_images, data.test_labels, cfg.normalize, cfg.eval_limit, cfg.device);
  choose_conv_algorithms(cfg.device, cfg.cudnn_find);
  std::vector<TransferConfig> configs;
  if (cfg.grid) {
    for (int64_t bs : {16, 64})
      for (float lr : {0.01f, 0.03f})
        for (float mu : {0.f, 0.9f}) {
          TransferConfig c = cfg;
          c.batch_size = bs, c.lr = lr, c.momentum = mu;
          c.save_checkpoint.clear();
          c.save_momentum.clear();
          c.dump_branches.clear();
          configs.push_back(c);
        }
  } else {
    configs.push_back(cfg);
  }
  std::vector<std::pair<std::string, RunOutput>> runs;
  const auto grid_start = std::chrono::steady_clock::now();
  for (size_t i = 0; i < configs.size(); ++i) {
    const std::string label = config_label(configs[i]);
    runs.emplace_back(label, train_one(configs[i], train, test, label));
    TransferResult& r = runs.back().second.result;
    r.test_set_size = data.test_images.count;
    if (cfg.grid && cfg.progress) {  // each row as it finishes, and when the grid should end
      const double spent = std::chrono::duration<double>(std::chrono::steady_clock::now() - grid_start).count();
      const size_t left = configs.size() - i - 1;
      char accuracy[48] = "";
      if (cfg.eval) std::snprintf(accuracy, sizeof accuracy, ", test accuracy %.2f%%", 100 * r.test_accuracy);
      const std::string rest = left ? "; the grid ends in about " + format_duration(spent / (i + 1) * left) : "";
      std::fprintf(stderr, "[grid %zu/%zu] %s: final train loss %.4f%s in %s%s\n", i + 1, configs.size(), label.c_str(),
                   r.final_train_loss, accuracy, format_duration(r.seconds).c_str(), rest.c_str());
    }
  }

  size_t best = 0;
  for (size_t i = 0; i < runs.size(); ++i)
    if (runs[i].second.result.test_accuracy > runs[best].second.result.test_accuracy) best = i;
  const std::string weights_label = cfg.initial_state ? "a given state dict"
                                    : !cfg.checkpoint.empty() ? "checkpoint " + cfg.checkpoint
                                    : cfg.weights == "none" ? "random init (--weights none)" : "ImageNet weights";
  if (!cfg.write_files) {
    runs[best].second.result.weights = weights_label;
    return std::move(runs[best].second.result);
  }
  fs::create_directories(cfg.out_dir);
  const fs::path dir(cfg.out_dir);
  json j = {{"weights", weights_label}, {"label", cfg.label}, {"freeze", cfg.freeze}, {"epochs", cfg.epochs}, {"max_steps", cfg.max_steps},
            {"shuffle", cfg.shuffle}, {"seed", cfg.seed}, {"device", device_name(cfg.device)}};
  j["tf32"] = cfg.tf32;
  j["cuda_graph"] = cfg.cuda_graph && cfg.device == Device::CUDA;
  if (cfg.device == Device::CUDA) {
    j["cudnn_algorithm_search"] = cfg.cudnn_find ? "timed (cudnnFind)" : "heuristics";
    j["cudnn_plans"] = conv_algorithms_chosen(cfg.device);
  }
  report_conv_algorithms(cfg.device, cfg.cudnn_find);
  j["runs"] = json::array();
  for (size_t i = 0; i < runs.size(); ++i) {
    const TransferResult& r = runs[i].second.result;
    const TransferConfig& c = configs[i];
    j["runs"].push_back({{"config", runs[i].first}, {"batch_size", c.batch_size}, {"lr", c.lr}, {"momentum", c.momentum},
                         {"steps", r.steps}, {"final_train_loss", r.final_train_loss}, {"test_loss", r.test_loss},
                         {"test_accuracy", r.test_accuracy}, {"seconds", r.seconds},
                         {"images_per_second", r.images_per_second},
                         {"ms_per_step_after_warmup", std::isfinite(r.steady_ms_per_step) ? json(r.steady_ms_per_step) : json(nullptr)}});
    if (!r.profile_ms_per_step.empty()) {
      json prof = json::object();
      for (const auto& [family, ms] : r.profile_ms_per_step) prof[family] = ms;
      j["runs"].back()["profile_ms_per_step"] = prof;
      print_profile(runs[i].first, r);
    }
  }
  j["best"] = runs[best].first;
  const std::string prefix = cfg.grid ? "q3_grid" : "q3";
  write_curves((dir / (prefix + "_train_loss.csv")).string(), runs);
  std::string eval_csv = "config,epoch,test_loss,test_accuracy\n";
  for (const auto& [label, r] : runs)
    for (const auto& [e, la] : r.epoch_eval)
      eval_csv += label + "," + std::to_string(e) + "," + std::to_string(la.first) + "," + std::to_string(la.second) + "\n";
  write_file_atomic((dir / (prefix + "_test.csv")).string(), eval_csv);
  write_file_atomic((dir / (prefix + "_summary.json")).string(), j.dump(2) + "\n");
  if (cfg.grid) {
    std::string md = "| batch | lr | momentum | final train loss | test accuracy |\n|---|---|---|---|---|\n";
    for (size_t i = 0; i < runs.size(); ++i) {
      char line[160];
      std::snprintf(line, sizeof line, "| %lld | %g | %g | %.4f | %.2f%%%s |\n", (long long)configs[i].batch_size,
                    configs[i].lr, configs[i].momentum, runs[i].second.result.final_train_loss,
                    100 * runs[i].second.result.test_accuracy, i == best ? " (best)" : "");
      md += line;
    }
    write_file_atomic((dir / "q3_grid.md").string(), md);
    std::printf("%s", md.c_str());
  }
  if (cfg.plot) {
    char title[256];
    std::snprintf(title, sizeof title, "Q3: ResNet18 on FashionMNIST, %s, freeze %s, %s%s%s%s", weights_label.c_str(),
                  cfg.freeze.c_str(), cfg.grid ? "grid search" : config_label(cfg).c_str(),
                  cfg.max_steps > 0 ? cat(", ", cfg.max_steps, " steps").c_str() : cat(", ", cfg.epochs, " epochs").c_str(),
                  cfg.label.empty() ? "" : "\n", cfg.label.c_str());
    run_plot("plot_transfer.py", {(dir / (prefix + "_train_loss.csv")).string(), (dir / (prefix + "_test.csv")).string(),
                                  (dir / cfg.pdf_name).string(), title});
  }
  TransferResult& r = runs[best].second.result;
  r.weights = weights_label;
  if (cfg.eval)
    std::printf("%s: final train loss %.4f, test loss %.4f, test accuracy %.2f%% (%s, %lld steps, %.1f s, %.0f img/s)\n",
                runs[best].first.c_str(), r.final_train_loss, r.test_loss, 100 * r.test_accuracy, weights_label.c_str(),
                (long long)r.steps, r.seconds, r.images_per_second);
  else
    std::printf("%s: final train loss %.4f (%lld steps, %.1f s, %.0f img/s; no evaluation)\n", runs[best].first.c_str(),
                r.final_train_loss, (long long)r.steps, r.seconds, r.images_per_second);
  return r;
}

std::pair<double, double> run_transfer_eval(const TransferEvalConfig& cfg) {
  HG_REQUIRE(!cfg.checkpoint.empty() || cfg.state, "transfer eval needs --checkpoint");
  HG_REQUIRE(cfg.limit >= 0, "--limit must not be negative");
  HG_REQUIRE(cfg.batch_size > 0 && cfg.batch_size <= 65536, "the batch size must be in [1, 65536], got ",
             cfg.batch_size);
  check_output_file(cfg.dump_logits, "--dump-logits");
  const FashionMnist data = load_fashion_mnist(cfg.data_dir);
  const Split test = to_split(data.test_images, data.test_labels, cfg.normalize, cfg.limit, cfg.device);
  choose_conv_algorithms(cfg.device, cfg.cudnn_find);
  ResNet18 model(cfg.batch_size, data.test_images.rows, data.test_images.cols, cfg.device, cfg.tf32);
  if (cfg.state) model.load(*cfg.state, /*strict=*/true);
  else model.load(read_state_dict(cfg.checkpoint), /*strict=*/true);
  std::vector<float> logits;
  const auto [loss, acc] =
      evaluate(model, test, cfg.batch_size, cfg.dump_logits.empty() ? nullptr : &logits, "eval", !cfg.quiet,
               cfg.between_batches);
  if (!cfg.dump_logits.empty())
    write_npy(cfg.dump_logits, Tensor::from_vector({test.count, 10}, logits));
  report_conv_algorithms(cfg.device, cfg.cudnn_find);
  if (!cfg.quiet) std::printf("eval on %lld test images: test loss %.4f, test accuracy %.2f%%\n", (long long)test.count, loss, 100 * acc);
  return {loss, acc};
}

}  // namespace handgrad
