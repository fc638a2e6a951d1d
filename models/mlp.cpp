#include "models/mlp.h"

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>

#include "host/atomic_file.h"
#include "host/memory.h"
#include "host/nn.h"
#include "host/npy.h"
#include "host/plot.h"
#include "host/random.h"
#include "host/step_graph.h"
#include "host/tensor.h"
#include "kernels/mlp/mlp_train.h"

namespace handgrad {

namespace fs = std::filesystem;

namespace {

// Philox streams of the generated problem: one per tensor, so each is independent of the sizes
// of the others.
enum MlpStream : uint64_t { kStreamX = 1, kStreamY = 2, kStreamW1 = 3, kStreamW2 = 4, kStreamIdx = 5 };

struct MlpData {
  Tensor X, Y, W1, W2, indices;  // host
};

Tensor load_or(const Tensor* given, const std::string& path, const Shape& shape, uint64_t seed, uint64_t stream) {
  if (given) {
    HG_REQUIRE(given->dtype() == DType::F32 && given->device() == Device::CPU, "Q2 inputs must be float32 on the CPU");
    // Read where the caller keeps it (nothing writes to the data: W1 and W2 are copied into the
    // parameters), not copied: X may be most of the memory budget.
    return Tensor::borrow(const_cast<void*>(given->raw()), given->shape(), DType::F32, Device::CPU);
  }
  if (path.empty()) return randn(shape, seed, stream);
  return read_npy_f32(path);
}

// Flattens a trailing unit dim ([n, 1] -> [n]) and checks the shape.
void expect_shape(Tensor& t, const Shape& want, const std::string& what) {
  if (t.ndim() == 2 && t.shape()[1] == 1 && want.size() == 1) t.reshape_({t.shape()[0]});
  HG_REQUIRE(t.shape() == want, what, " has shape ", shape_str(t.shape()), ", expected ",
             shape_str(want));
}

MlpData make_data(MlpConfig& cfg) {
  MlpData d;
  // Replayed files fix the sizes; the flags must agree with them.
  d.X = load_or(cfg.x, cfg.x_path, {cfg.n, cfg.d}, cfg.seed, kStreamX);
  HG_REQUIRE(d.X.ndim() == 2, "--x must be a 2-D array [n, d], got ", shape_str(d.X.shape()));
  cfg.n = d.X.shape()[0];
  cfg.d = d.X.shape()[1];
  d.W1 = load_or(cfg.w1, cfg.w1_path, {cfg.d, cfg.h}, cfg.seed, kStreamW1);
  HG_REQUIRE(d.W1.ndim() == 2, "--w1 must be a 2-D array [d, h], got ", shape_str(d.W1.shape()));
  cfg.h = d.W1.shape()[1];
  expect_shape(d.W1, {cfg.d, cfg.h}, "--w1");
  d.Y = load_or(cfg.y, cfg.y_path, {cfg.n}, cfg.seed, kStreamY);
  expect_shape(d.Y, {cfg.n}, "--y");
  d.W2 = load_or(cfg.w2, cfg.w2_path, {cfg.h}, cfg.seed, kStreamW2);
  expect_shape(d.W2, {cfg.h}, "--w2");
  HG_REQUIRE(cfg.n > 0 && cfg.d > 0 && cfg.h > 0, "sizes must be positive (n=", cfg.n, ", d=",
             cfg.d, ", h=", cfg.h, ")");
  if (cfg.indices_path.empty() && !cfg.indices) {
    d.indices = Tensor::empty({cfg.iters}, Device::CPU, DType::I64);
    fill_uniform_int(d.indices, static_cast<uint64_t>(cfg.n), cfg.seed, kStreamIdx);
  } else {
    if (cfg.indices) HG_REQUIRE(cfg.indices->dtype() == DType::I64 && cfg.indices->device() == Device::CPU,
                                "Q2 indices must be int64 on the CPU");
    d.indices = cfg.indices ? cfg.indices->clone() : read_npy_i64(cfg.indices_path);
    HG_REQUIRE(d.indices.ndim() == 1 && d.indices.numel() >= cfg.iters, "--indices must be a 1-D array of at least ",
               cfg.iters, " sample indices, got ", shape_str(d.indices.shape()));
    const int64_t* idx = d.indices.data<int64_t>();
    for (int64_t t = 0; t < cfg.iters; ++t)
      HG_REQUIRE(idx[t] >= 0 && idx[t] < cfg.n, "--indices[", t, "] = ", idx[t],
                 " is out of range [0, ", cfg.n, ")");
  }
  for (const Tensor* t : {&d.X, &d.Y, &d.W1, &d.W2}) {  // in place: X may be most of the memory budget
    const float* v = t->data<float>();
    HG_REQUIRE(std::all_of(v, v + t->numel(), [](float x) { return std::isfinite(x); }), "replayed inputs must be finite");
  }
  return d;
}

// cpu::mlp_train in blocks of iterations, calling `between` after each block: the same steps in
// the same order (a model's steps depend on nothing but its own state), so the same numbers. Each
// block trains the models still alive in one call (in parallel, as one call over the whole run
// would); once one has diverged, the others' parameters are gathered into a scratch run.
void train_in_blocks(float* params, float* losses, int64_t* diverged, const MlpRun& r,
                     const std::function<void()>& between) {
  constexpr int64_t kBlock = 1 << 16;
  const int64_t P = mlp_param_count(r.d, r.h), M = r.models;
  std::vector<float> block_losses(M * std::min(kBlock, r.iters)), alive_params, alive_lr;
  std::vector<int64_t> block_diverged(M);
  std::fill(diverged, diverged + M, -1);
  for (int64_t t0 = 0; t0 < r.iters; t0 += kBlock) {
    std::vector<int64_t> alive;
    for (int64_t m = 0; m < M; ++m)
      if (diverged[m] < 0) alive.push_back(m);
    if (alive.empty()) break;
    const int64_t A = static_cast<int64_t>(alive.size());
    MlpRun block = r;
    block.models = A;
    block.iters = std::min(kBlock, r.iters - t0);
    block.indices = r.indices + t0;
    float* p = params;
    if (A < M) {
      alive_params.resize(A * P);
      alive_lr.resize(A);
      for (int64_t k = 0; k < A; ++k) {
        std::copy_n(params + alive[k] * P, P, alive_params.data() + k * P);
        alive_lr[k] = r.lr[alive[k]];
      }
      p = alive_params.data();
      block.lr = alive_lr.data();
    }
    cpu::mlp_train(p, block_losses.data(), block_diverged.data(), block);
    for (int64_t k = 0; k < A; ++k) {
      const int64_t m = alive[k];
      if (A < M) std::copy_n(alive_params.data() + k * P, P, params + m * P);
      std::copy_n(block_losses.data() + k * block.iters, block.iters, losses + m * r.iters + t0);
      if (block_diverged[k] >= 0) {
        diverged[m] = t0 + block_diverged[k];
        std::fill(losses + m * r.iters + t0 + block.iters, losses + (m + 1) * r.iters,
                  std::numeric_limits<float>::quiet_NaN());
      }
    }
    between();
  }
}

// After a run whose kernels do not stop by themselves: find each model's divergence and
// blank what followed it, as the CPU and fused trainers do.
int64_t mark_divergence(float* losses, int64_t iters) {
  for (int64_t t = 0; t < iters; ++t)
    if (!(losses[t] <= kDivergedLoss)) {
      std::fill(losses + t + 1, losses + iters, std::numeric_limits<float>::quiet_NaN());
      return t;
    }
  return -1;
}

// The step-by-step GPU trainer: one handwritten kernel per step of the math, all models of a
// sweep in each launch. Kernels read the current step from a device counter that the SGD
// kernel advances, so a block of steps can be captured once into a CUDA graph and replayed.
class StepTrainer {
 public:
  StepTrainer(Device dev, const MlpRun& r, float* params, float* losses)
      : dev_(dev), r_(r), params_(params), losses_(losses),
        grads_(Tensor::zeros({r.models * mlp_param_count(r.d, r.h)}, dev)),
        a_(Tensor::empty({r.models, r.h}, dev)),
        act_(Tensor::empty({r.models, r.h}, dev)),
        dact_(Tensor::empty({r.models, r.h}, dev)),
        da_(Tensor::empty({r.models, r.h}, dev)),
        yhat_(Tensor::empty({r.models}, dev)),
        dy_(Tensor::empty({r.models}, dev)),
        step_(Tensor::zeros({1}, dev, DType::I64)) {}

  // Enqueues one training step (10 launches) on the current stream.
  void enqueue_step() {
    const int64_t D = r_.d, H = r_.h, M = r_.models, P = mlp_param_count(D, H);
    int64_t* step = step_.data<int64_t>();
    const RowSource x{r_.X, 0, r_.indices, step, D};  // the sampled data point, for every model
    const RowSource y{r_.Y, 0, r_.indices, step, 1};
    const RowSource act{act_.data<float>(), H};
    const LinearRowShape layer1{M, D, H, P}, layer2{M, H, 1, P};
    float* W2 = params_ + D * H;
    float* dW2 = grads_.data<float>() + D * H;
    nn::linear_row_forward(dev_, a_.data<float>(), x, params_, layer1);                 // a = x W1
    nn::relu_forward(dev_, act_.data<float>(), a_.data<float>(), M * H);                // a' = relu(a)
    nn::linear_row_forward(dev_, yhat_.data<float>(), act, W2, layer2);                 // y' = a' W2
    nn::mse_loss_grad(dev_, losses_, r_.iters, step, dy_.data<float>(), yhat_.data<float>(), y, M);
    nn::linear_row_backward_weight(dev_, dW2, act, dy_.data<float>(), layer2);          // dW2 = a'^T dy'
    nn::linear_row_backward_input(dev_, dact_.data<float>(), dy_.data<float>(), W2, layer2);  // da' = dy' W2^T
    nn::relu_backward(dev_, da_.data<float>(), dact_.data<float>(), a_.data<float>(), M * H);
    nn::linear_row_backward_weight(dev_, grads_.data<float>(), x, da_.data<float>(), layer1);  // dW1 = x^T da
    nn::sgd_step(dev_, params_, grads_.data<float>(), r_.lr, M, P, step);               // W -= lr dW; ++step
  }

  // Copies the losses of the steps run since the last call back to `host_losses` and returns
  // true when every model has diverged (a sweep keeps going while any model still trains).
  bool all_diverged(int64_t end, std::vector<float>& host_losses) {
    for (int64_t m = 0; m < r_.models; ++m)
      copy_bytes(host_losses.data() + m * r_.iters + checked_, Device::CPU, losses_ + m * r_.iters + checked_, dev_,
                 (end - checked_) * sizeof(float));
    bool all = true;
    for (int64_t m = 0; m < r_.models; ++m) {
      for (int64_t t = checked_; t < end && !diverged_[m]; ++t)
        diverged_[m] = !(host_losses[m * r_.iters + t] <= kDivergedLoss);
      all = all && diverged_[m];
    }
    checked_ = end;
    return all;
  }

 private:
  Device dev_;
  MlpRun r_;
  float* params_;
  float* losses_;
  Tensor grads_, a_, act_, dact_, da_, yhat_, dy_, step_;
  std::vector<bool> diverged_ = std::vector<bool>(r_.models, false);
  int64_t checked_ = 0;
};

// Runs `impl` on the GPU; returns the losses [models][iters] on the host.
std::vector<float> train_on_gpu(const std::string& impl, const MlpRun& host_run, Tensor& params,
                                std::vector<int64_t>& diverged_at) {
  const Device dev = params.device();
  const int64_t M = host_run.models, iters = host_run.iters;
  // Uploaded from where they are (a host vector between doubled X's memory at once).
  Tensor X = Tensor::empty({host_run.n, host_run.d}, dev), Y = Tensor::empty({host_run.n}, dev);
  copy_bytes(X.raw(), dev, host_run.X, Device::CPU, X.nbytes());
  copy_bytes(Y.raw(), dev, host_run.Y, Device::CPU, Y.nbytes());
  Tensor lr = Tensor::from_vector({M}, std::vector<float>(host_run.lr, host_run.lr + M), dev);
  Tensor idx = Tensor::empty({iters}, dev, DType::I64);
  copy_bytes(idx.raw(), dev, host_run.indices, Device::CPU, sizeof(int64_t) * iters);
  Tensor losses = Tensor::full({M, iters}, std::numeric_limits<float>::quiet_NaN(), dev);
  MlpRun r = host_run;
  r.X = X.data<float>();
  r.Y = Y.data<float>();
  r.lr = lr.data<float>();
  r.indices = idx.data<int64_t>();
  std::vector<float> host_losses(M * iters, std::numeric_limits<float>::quiet_NaN());

  if (impl == "fused") {
    Tensor div = Tensor::empty({M}, dev, DType::I64);
    nn::mlp_train_fused(dev, params.data<float>(), losses.data<float>(), div.data<int64_t>(), r);
    copy_bytes(diverged_at.data(), Device::CPU, div.raw(), dev, sizeof(int64_t) * M);
    copy_bytes(host_losses.data(), Device::CPU, losses.raw(), dev, sizeof(float) * M * iters);
    return host_losses;
  }

  StepTrainer trainer(dev, r, params.data<float>(), losses.data<float>());
  constexpr int64_t kCheckEvery = 1000;  // divergence check: one small copy per 1000 steps
  int64_t t = 0;
  bool stopped = false;  // every model diverged
  constexpr int64_t kGraphSteps = 500;
  if (impl == "graph" && iters > kGraphSteps) {
    // Step 0 runs eagerly: it loads every kernel's module before the capture (lazy loading
    // inside a capture is not allowed on every driver).
    trainer.enqueue_step();
    t = 1;
    synchronize(dev);
    // Capture kGraphSteps steps once and replay them; the remainder runs step by step.
    StepGraph graph;
    std::string why;
    HG_ASSERT(graph.capture(dev, [&] { for (int64_t k = 0; k < kGraphSteps; ++k) trainer.enqueue_step(); }, &why),
              "capturing the Q2 steps into a CUDA graph failed: ", why);
    for (; t + kGraphSteps <= iters; t += kGraphSteps) {
      graph.replay();
      const int64_t end = t + kGraphSteps;
      if (end / kCheckEvery > t / kCheckEvery || end == iters) {
        synchronize(dev);
        if ((stopped = trainer.all_diverged(end, host_losses))) break;
      }
    }
    synchronize(dev);
  }
  for (; t < iters && !stopped; ++t) {
    trainer.enqueue_step();
    if ((t + 1) % kCheckEvery == 0 || t + 1 == iters) stopped = trainer.all_diverged(t + 1, host_losses);
  }
  synchronize(dev);
  copy_bytes(host_losses.data(), Device::CPU, losses.raw(), dev, sizeof(float) * M * iters);
  for (int64_t m = 0; m < M; ++m) diverged_at[m] = mark_divergence(host_losses.data() + m * iters, iters);
  return host_losses;
}

// Mean squared error of a model over the whole dataset, in double.
double dataset_mse(const float* params, const MlpData& d, int64_t D, int64_t H) {
  const float* W1 = params;
  const float* W2 = params + D * H;
  const int64_t N = d.X.shape()[0];
  const float* X = d.X.data<float>();
  const float* Y = d.Y.data<float>();
  double total = 0;
  std::vector<double> a(H);
  for (int64_t i = 0; i < N; ++i) {
    std::fill(a.begin(), a.end(), 0.0);
    for (int64_t k = 0; k < D; ++k)
      for (int64_t j = 0; j < H; ++j) a[j] += double(X[i * D + k]) * W1[k * H + j];
    double y = 0;
    for (int64_t j = 0; j < H; ++j) y += std::max(a[j], 0.0) * W2[j];
    total += (y - Y[i]) * (y - Y[i]);
  }
  return total / N;
}

std::string lr_str(float lr) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", lr);
  return buf;
}

// What Python's f"{x}" prints for a float: the shortest digits that read back as x, in fixed
// notation for 1e-4 <= |x| < 1e16 (with ".0" on whole numbers), else as 1.5e-05.
std::string python_float_str(double x) {
  if (!std::isfinite(x)) return std::isnan(x) ? "nan" : x > 0 ? "inf" : "-inf";
  char sci[64];
  const auto end = std::to_chars(sci, sci + sizeof sci, x, std::chars_format::scientific).ptr;
  const std::string s(sci, end);  // [-]d[.ddd]e[+-]XX
  const size_t e = s.find('e');
  const int exp10 = std::stoi(s.substr(e + 1));
  const bool negative = s[0] == '-';
  std::string digits;
  for (size_t i = negative; i < e; ++i)
    if (s[i] != '.') digits += s[i];
  std::string out = negative ? "-" : "";
  if (exp10 < -4 || exp10 >= 16) {
    out += digits.substr(0, 1);
    if (digits.size() > 1) out += "." + digits.substr(1);
    char ex[16];
    std::snprintf(ex, sizeof ex, "e%c%02d", exp10 < 0 ? '-' : '+', std::abs(exp10));
    return out + ex;
  }
  if (exp10 < 0) return out + "0." + std::string(-exp10 - 1, '0') + digits;
  const size_t int_digits = exp10 + 1;
  if (digits.size() <= int_digits) return out + digits + std::string(int_digits - digits.size(), '0') + ".0";
  return out + digits.substr(0, int_digits) + "." + digits.substr(int_digits);
}

// Returns the paths it wrote (the plot only where matplotlib made it).
std::vector<std::string> write_outputs(const MlpConfig& cfg, const MlpResult& res) {
  fs::create_directories(cfg.out_dir);
  const fs::path dir(cfg.out_dir);
  const MlpModelResult& best = res.models[res.best];
  // The course's log, for the best (or only) learning rate: `if iter % 100 == 0` with iter
  // counted from 0, each line the loss computed at that iteration (before its update), printed
  // as Python prints the float.
  std::string txt;
  for (int64_t t = 0; t < cfg.iters; t += cfg.log_every)
    txt += cat("At ", t, "-th iteration, loss is ", python_float_str(best.losses[t]), "\n");
  std::vector<std::string> written;
  auto write = [&](const fs::path& path, const std::string& text) {
    write_file_atomic(path.string(), text);
    written.push_back(path.string());
  };
  write(dir / "Q2_output.txt", txt);
  std::string csv = "iteration";
  for (const MlpModelResult& m : res.models) csv += ",lr=" + lr_str(m.lr);
  csv += "\n";
  for (int64_t t = 0; t < cfg.iters; t += cfg.log_every) {
    csv += std::to_string(t);
    for (const MlpModelResult& m : res.models) {
      char v[32];
      std::snprintf(v, sizeof v, ",%.9g", m.losses[t]);
      csv += v;
    }
    csv += "\n";
  }
  write(dir / "mlp_loss.csv", csv);

  nlohmann::ordered_json j = {{"device", device_name(res.device)}, {"impl", res.impl},
                              {"n", cfg.n}, {"d", cfg.d}, {"h", cfg.h}, {"iters", cfg.iters},
                              {"seed", cfg.seed}, {"seconds", res.seconds},
                              {"us_per_iter", res.us_per_iter}, {"best_lr", best.lr}};
  j["models"] = nlohmann::ordered_json::array();
  for (const MlpModelResult& m : res.models) {
    auto num = [](double v) { return std::isfinite(v) ? nlohmann::ordered_json(v) : nlohmann::ordered_json(nullptr); };
    j["models"].push_back({{"lr", m.lr}, {"diverged_at", m.diverged_at}, {"final_loss", num(m.final_loss)},
                           {"last1000_mean", num(m.last1000_mean)}, {"dataset_mse", num(m.dataset_mse)}});
  }
  write(dir / "mlp_summary.json", j.dump(2) + "\n");

  if (!cfg.save_weights_dir.empty()) {
    fs::create_directories(cfg.save_weights_dir);
    Tensor w1 = Tensor::from_vector({cfg.d, cfg.h}, std::vector<float>(best.params.begin(), best.params.begin() + cfg.d * cfg.h));
    Tensor w2 = Tensor::from_vector({cfg.h, 1}, std::vector<float>(best.params.begin() + cfg.d * cfg.h, best.params.end()));
    for (const auto& [name, w] : {std::pair{"W1.npy", &w1}, {"W2.npy", &w2}}) {
      const std::string path = (fs::path(cfg.save_weights_dir) / name).string();
      write_npy(path, *w);
      written.push_back(path);
    }
  }
  if (cfg.plot) {
    std::string lrs;
    for (const MlpModelResult& m : res.models) lrs += (lrs.empty() ? "" : ", ") + lr_str(m.lr);
    char title[256];
    std::snprintf(title, sizeof title,
                  "Q2: 2-layer ReLU MLP, batch-1 SGD without autograd\nN=%lld D=%lld H=%lld, %lld iterations, "
                  "lr %s, seed %llu, %s/%s",
                  (long long)cfg.n, (long long)cfg.d, (long long)cfg.h, (long long)cfg.iters, lrs.c_str(),
                  (unsigned long long)cfg.seed, device_name(res.device), res.impl.c_str());
    if (run_plot("plot_mlp_loss.py", {(dir / "mlp_loss.csv").string(), (dir / "question2_result.pdf").string(), title}))
      written.push_back((dir / "question2_result.pdf").string());
  }
  return written;
}

}  // namespace

std::string resolve_mlp_impl(const std::string& impl, Device device) {
  if (impl == "auto") return device == Device::CUDA ? "fused" : "cpu";
  HG_REQUIRE(impl == "cpu" || impl == "kernels" || impl == "graph" || impl == "fused",
             "--impl must be auto, cpu, kernels, graph or fused, got '", impl, "'");
  HG_REQUIRE((impl == "cpu") == (device == Device::CPU), "--impl ", impl, " runs on ",
             impl == "cpu" ? "the CPU" : "the GPU", ", but --device is ", device_name(device));
  return impl;
}

MlpResult run_mlp(const MlpConfig& config) {
  MlpConfig cfg = config;
  HG_REQUIRE(cfg.iters > 0, "--iters must be positive, got ", cfg.iters);
  HG_REQUIRE(cfg.log_every > 0, "--log-every must be positive, got ", cfg.log_every);
  HG_REQUIRE(!cfg.lrs.empty(), "--lr needs at least one learning rate");
  for (float lr : cfg.lrs)
    HG_REQUIRE(std::isfinite(lr) && lr > 0, "--lr must be positive and finite, got ", lr);
  HG_REQUIRE(cfg.x_path.empty() == false || cfg.x || (cfg.n > 0 && cfg.d > 0), "--n and --d must be positive (n=", cfg.n, ", d=", cfg.d, ")");
  HG_REQUIRE(cfg.w1_path.empty() == false || cfg.w1 || cfg.h > 0, "--h must be positive, got ", cfg.h);
  // a * b < limit, asked without forming a * b (which could overflow: --n 2^62).
  auto product_below = [](int64_t a, int64_t b, int64_t limit) { return b <= 0 || a < limit / b + (limit % b != 0); };
  HG_REQUIRE(product_below(cfg.n, cfg.d, int64_t(1) << 32) && product_below(cfg.d, cfg.h, int64_t(1) << 30) &&
                 cfg.iters < (int64_t(1) << 31),
             "problem too large (n*d < 2^32, d*h < 2^30, iters < 2^31)");
  // Outputs first: a folder that cannot be written is found before the training, not after it.
  if (cfg.write_files) check_output_dir(cfg.out_dir, "--out-dir");
  if (cfg.write_files && !cfg.save_weights_dir.empty()) check_output_dir(cfg.save_weights_dir, "--save-weights");
  // The sample indices, every iteration's loss for each model and their copies in the result.
  require_memory(static_cast<uint64_t>(cfg.iters) * (8 + 8 * cfg.lrs.size()),
                 cat("--iters ", cfg.iters, " with ", cfg.lrs.size(), " learning rate(s)"));
  MlpResult res;
  res.device = cfg.device;
  res.impl = resolve_mlp_impl(cfg.impl, cfg.device);
  MlpData data = make_data(cfg);
  res.n = cfg.n, res.d = cfg.d, res.h = cfg.h;

  const int64_t M = static_cast<int64_t>(cfg.lrs.size()), P = mlp_param_count(cfg.d, cfg.h);
  Tensor params = Tensor::empty({M, P});
  for (int64_t m = 0; m < M; ++m) {
    std::copy_n(data.W1.data<float>(), cfg.d * cfg.h, params.data<float>() + m * P);
    std::copy_n(data.W2.data<float>(), cfg.h, params.data<float>() + m * P + cfg.d * cfg.h);
  }
  MlpRun run;
  run.models = M;
  run.n = cfg.n;
  run.d = cfg.d;
  run.h = cfg.h;
  run.iters = cfg.iters;
  run.X = data.X.data<float>();
  run.Y = data.Y.data<float>();
  run.indices = data.indices.data<int64_t>();
  run.lr = cfg.lrs.data();

  if (res.impl == "fused" && !cuda_kernels_run()) res.impl = "cpu";
  if (res.impl == "fused" && !nn::mlp_fused_fits(Device::CUDA, cfg.d, cfg.h)) {
    std::fprintf(stderr, "handgrad: note: d*h = %lld weights do not fit in shared memory; using --impl graph\n",
                 static_cast<long long>(cfg.d * cfg.h));
    res.impl = "graph";
  }
  std::vector<int64_t> diverged(M, -1);
  std::vector<float> losses;
  double seconds = 0;
  if (res.impl == "cpu") {
    losses.assign(M * cfg.iters, 0.f);
    const auto t0 = std::chrono::steady_clock::now();
    if (cfg.between_blocks) train_in_blocks(params.data<float>(), losses.data(), diverged.data(), run, cfg.between_blocks);
    else cpu::mlp_train(params.data<float>(), losses.data(), diverged.data(), run);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  } else {
    HG_REQUIRE(built_with_cuda(), "--impl ", res.impl, " needs the CUDA backend, and this build has none");
    Tensor dparams = params.to(Device::CUDA);
    synchronize(Device::CUDA);
    const auto t0 = std::chrono::steady_clock::now();
    losses = train_on_gpu(res.impl, run, dparams, diverged);
    synchronize(Device::CUDA);
    seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    params.copy_from(dparams);
  }
  res.seconds = seconds;
  res.us_per_iter = seconds / cfg.iters * 1e6;

  for (int64_t m = 0; m < M; ++m) {
    MlpModelResult mr;
    mr.lr = cfg.lrs[m];
    mr.diverged_at = diverged[m];
    mr.losses.assign(losses.begin() + m * cfg.iters, losses.begin() + (m + 1) * cfg.iters);
    mr.params.assign(params.data<float>() + m * P, params.data<float>() + (m + 1) * P);
    mr.final_loss = mr.losses.back();
    const int64_t tail = std::min<int64_t>(1000, cfg.iters);
    double sum = 0;
    for (int64_t t = cfg.iters - tail; t < cfg.iters; ++t) sum += mr.losses[t];
    mr.last1000_mean = sum / tail;
    mr.dataset_mse = mr.diverged_at >= 0 ? NAN : dataset_mse(mr.params.data(), data, cfg.d, cfg.h);
    if (mr.diverged_at < 0 && (res.best < 0 || mr.last1000_mean < res.models[res.best].last1000_mean))
      res.best = static_cast<int>(m);
    res.models.push_back(std::move(mr));
  }
  if (res.best < 0 && cfg.throw_if_all_diverge) {
    const MlpModelResult& m0 = res.models[0];
    throw UserError(cat("training diverged at iteration ", m0.diverged_at, " (counted from 0; loss ",
                        m0.losses[m0.diverged_at], ") with lr ", lr_str(m0.lr),
                        M > 1 ? " and every other lr of the sweep" : "",
                        ": try a smaller --lr (1e-5, the default, converges on the default problem)"));
  }
  if (cfg.write_files && res.best >= 0) res.files_written = write_outputs(cfg, res);
  return res;
}

}  // namespace handgrad
