#include "commands/report.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sys/resource.h>
#include <nlohmann/json.hpp>
#include <sstream>

#include "host/atomic_file.h"
#include "host/einsum.h"
#include "host/einsum_reference.h"
#include "host/gradcheck.h"
#include "host/idx.h"
#include "host/npy.h"
#include "host/plot.h"
#include "host/progress.h"
#include "host/random.h"
#include "host/subprocess.h"
#include "host/zip.h"
#include "kernels/nn/conv2d.h"
#include "kernels/philox.h"
#include "kernels/random/random.h"
#include "models/autodiff.h"
#include "models/mlp.h"
#include "models/transfer.h"

// GCC 12 reports a false -Wmaybe-uninitialized inside std::vector when nlohmann::json objects
// are built from initializer lists (GCC bug 107138); nothing here is uninitialized.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

namespace handgrad {

namespace fs = std::filesystem;
using json = nlohmann::ordered_json;

const std::vector<std::string>& report_exercises() {
  static const std::vector<std::string> all = {"q1", "q2", "q3", "q4", "q5", "scripts"};
  return all;
}

namespace {

// printf into a std::string.
template <typename... Args>
std::string fmt(const char* f, Args... args) {
  char buf[512];
  std::snprintf(buf, sizeof buf, f, args...);
  return buf;
}

double now_s() {
  using clock = std::chrono::steady_clock;
  return std::chrono::duration<double>(clock::now().time_since_epoch()).count();
}

// Median wall time of `reps` runs of fn (after one warm-up), in seconds.
template <typename Fn>
double median_time(Device dev, int reps, Fn&& fn) {
  fn();
  synchronize(dev);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) {
    const double t0 = now_s();
    fn();
    synchronize(dev);
    t.push_back(now_s() - t0);
  }
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

struct CourseOp {
  const char* name;
  const char* equation;
  Shape a, b;  // b empty: one operand
};

// Relative error of `got` against a float64 evaluation of `count` sampled outputs.
double sampled_error(const CourseOp& op, const Tensor& A, const Tensor* B, const Tensor& got,
                     uint64_t seed) {
  const std::vector<float> out = got.to_vector();
  const float* a = A.data<float>();
  const Shape& sa = A.shape();
  const int64_t count = std::min<int64_t>(512, got.numel());
  double err = 0, scale = 1e-30;
  const Philox rng(seed, 99);
  for (int64_t s = 0; s < count; ++s) {
    const int64_t flat = static_cast<int64_t>(rng.uniform_int(s, got.numel()));
    // Decompose into the output's indices.
    Shape idx(got.ndim());
    int64_t rem = flat;
    for (int d = got.ndim() - 1; d >= 0; --d) {
      idx[d] = rem % got.shape()[d];
      rem /= got.shape()[d];
    }
    double want = 0;
    auto at = [&](int64_t i0, int64_t i1, int64_t i2, int64_t i3) {
      return static_cast<double>(a[((i0 * sa[1] + i1) * sa[2] + i2) * sa[3] + i3]);
    };
    if (std::string(op.equation) == "abcd,abcd->abcd") {
      want = at(idx[0], idx[1], idx[2], idx[3]) * B->data<float>()[flat];
    } else if (std::string(op.equation) == "abcd,ed->abce") {
      const float* b = B->data<float>();
      for (int64_t d = 0; d < sa[3]; ++d) want += at(idx[0], idx[1], idx[2], d) * b[idx[3] * sa[3] + d];
    } else {  // abcd->abd
      for (int64_t c = 0; c < sa[2]; ++c) want += at(idx[0], idx[1], c, idx[2]);
    }
    scale = std::max(scale, std::fabs(want));
    err = std::max(err, std::fabs(out[flat] - want));
  }
  return err / scale;
}

// An op's random operands, on the host and on the report's device (b undefined for one operand).
struct OpInputs {
  Tensor a, b, dev_a, dev_b;
  const Tensor* host_b() const { return b.defined() ? &b : nullptr; }
  const Tensor* device_b() const { return b.defined() ? &dev_b : nullptr; }
};

OpInputs make_inputs(const CourseOp& op, const ReportOptions& opt, uint64_t& stream) {
  OpInputs in;
  in.a = randn(op.a, opt.seed, stream++);
  in.dev_a = in.a.to(opt.device);
  if (!op.b.empty()) {
    in.b = randn(op.b, opt.seed, stream++);
    in.dev_b = in.b.to(opt.device);
  }
  return in;
}

Tensor run_op(const CourseOp& op, const Tensor& A, const Tensor* B) {
  if (std::string(op.equation) == "abcd,abcd->abcd") return einsum_mul_abcd(A, *B);
  if (std::string(op.equation) == "abcd,ed->abce") return einsum_contract_abcd_ed(A, *B);
  return einsum_sum_abcd_abd(A);
}

// Q1: the three course contractions. A small worked example (saved as .npy, checked against
// the float64 reference) and a timed run at a useful size (checked on samples, and against
// the CPU twin when it ran on the GPU).
json report_q1(const ReportOptions& opt, bool& ok) {
  const fs::path dir = fs::path(opt.out_dir) / "q1";
  fs::create_directories(dir);
  const std::vector<CourseOp> examples = {
      {"mul", "abcd,abcd->abcd", {2, 3, 4, 5}, {2, 3, 4, 5}},
      {"contract", "abcd,ed->abce", {2, 3, 4, 5}, {6, 5}},
      {"sum", "abcd->abd", {2, 3, 4, 5}, {}},
  };
  const std::vector<CourseOp> timed = opt.quick
      ? std::vector<CourseOp>{{"mul", "abcd,abcd->abcd", {16, 16, 64, 64}, {16, 16, 64, 64}},
                              {"contract", "abcd,ed->abce", {8, 16, 32, 128}, {128, 128}},
                              {"sum", "abcd->abd", {16, 16, 64, 64}, {}}}
      : std::vector<CourseOp>{{"mul", "abcd,abcd->abcd", {32, 64, 64, 128}, {32, 64, 64, 128}},
                              {"contract", "abcd,ed->abce", {16, 32, 64, 256}, {256, 256}},
                              {"sum", "abcd->abd", {32, 64, 64, 128}, {}}};
  json j;
  j["device"] = device_name(opt.device);
  j["examples"] = json::array();
  uint64_t stream = 0;
  for (const CourseOp& op : examples) {
    const OpInputs in = make_inputs(op, opt, stream);
    Tensor out = run_op(op, in.dev_a, in.device_b());
    std::vector<const Tensor*> args = {&in.a};
    if (in.host_b()) args.push_back(in.host_b());
    const ReferenceResult ref = einsum_reference(op.equation, args);
    const double err = relative_error(out.to_vector(), ref.values);
    const bool pass = err < 1e-5;
    ok = ok && pass;
    write_npy((dir / (std::string(op.name) + "_A.npy")).string(), in.a);
    if (in.host_b()) write_npy((dir / (std::string(op.name) + "_B.npy")).string(), in.b);
    write_npy((dir / (std::string(op.name) + "_out.npy")).string(), out);
    j["examples"].push_back({{"op", op.name}, {"equation", op.equation}, {"a", op.a}, {"b", op.b},
                             {"out", out.shape()}, {"rel_error_vs_float64", err}, {"pass", pass}});
  }

  j["timed"] = json::array();
  for (const CourseOp& op : timed) {
    const OpInputs in = make_inputs(op, opt, stream);
    const Tensor& A = in.a;
    const Tensor* pb = in.host_b();
    Tensor out;
    const double secs = median_time(opt.device, opt.quick ? 3 : 7,
                                    [&] { out = run_op(op, in.dev_a, in.device_b()); });
    const double err = sampled_error(op, A, pb, out, opt.seed);
    double twin_err = -1;
    if (opt.device == Device::CUDA) {
      Tensor cpu_out = run_op(op, A, pb);
      const std::vector<float> c = cpu_out.to_vector();
      twin_err = relative_error(out.to_vector(), std::vector<double>(c.begin(), c.end()));
    }
    const bool pass = err < 1e-5 && twin_err < 1e-5;
    ok = ok && pass;
    double bytes = 4.0 * (A.numel() + (pb ? pb->numel() : 0) + out.numel()), flops = 0;
    if (std::string(op.equation) == "abcd,ed->abce") flops = 2.0 * out.numel() * op.a[3];
    json row = {{"op", op.name}, {"equation", op.equation}, {"a", op.a}, {"b", op.b},
                {"out", out.shape()}, {"ms", secs * 1e3}, {"GB_per_s", bytes / secs / 1e9},
                {"rel_error_vs_float64_samples", err}, {"pass", pass}};
    if (flops > 0) row["TFLOP_per_s"] = flops / secs / 1e12;
    if (twin_err >= 0) row["rel_error_vs_cpu_twin"] = twin_err;
    j["timed"].push_back(row);
  }

  // The human-readable summary.
  std::string txt = cat("Q1: einsum on ", device_name(opt.device), (opt.quick ? " (quick sizes)" : ""), "\n\n");
  txt += "Worked examples (inputs and outputs in q1/*.npy), against a float64 reference:\n";
  for (const json& e : j["examples"]) {
    char line[256];
    std::snprintf(line, sizeof line, "  %-18s out %-16s rel.err %.2e  %s\n",
                  e["equation"].get<std::string>().c_str(), shape_str(e["out"].get<Shape>()).c_str(),
                  e["rel_error_vs_float64"].get<double>(), e["pass"].get<bool>() ? "ok" : "FAIL");
    txt += line;
  }
  txt += "\nTimed runs (median):\n";
  for (const json& e : j["timed"]) {
    char line[320];
    std::snprintf(line, sizeof line, "  %-18s A %-20s %9.3f ms %8.1f GB/s%s  rel.err %.1e  %s\n",
                  e["equation"].get<std::string>().c_str(), shape_str(e["a"].get<Shape>()).c_str(),
                  e["ms"].get<double>(), e["GB_per_s"].get<double>(),
                  e.contains("TFLOP_per_s") ? fmt(" %.3f TFLOP/s", e["TFLOP_per_s"].get<double>()).c_str() : "",
                  e["rel_error_vs_float64_samples"].get<double>(), e["pass"].get<bool>() ? "ok" : "FAIL");
    txt += line;
  }
  write_file_atomic((fs::path(opt.out_dir) / "q1_einsum.txt").string(), txt);
  write_file_atomic((fs::path(opt.out_dir) / "q1_einsum.json").string(), j.dump(2) + "\n");
  std::printf("%s", txt.c_str());
  return j;
}

// Q2: the MLP with the course's suggested lr and smaller ones, all trained on the same data and
// sample order; the best converged rate gives Q2_output.txt, every rate is in the plot.
json report_q2(const ReportOptions& opt, bool& ok) {
  MlpConfig cfg;
  cfg.device = opt.device;
  cfg.seed = opt.seed;
  cfg.out_dir = opt.out_dir;
  cfg.lrs = {0.03f, 0.01f, 1e-3f, 1e-4f, 1e-5f};
  const MlpResult r = run_mlp(cfg);
  json j = {{"device", device_name(r.device)}, {"impl", r.impl}, {"iters", cfg.iters},
            {"seconds", r.seconds}, {"us_per_iter", r.us_per_iter}, {"best_lr", r.models[r.best].lr}};
  j["models"] = json::array();
  for (const MlpModelResult& m : r.models)
    j["models"].push_back({{"lr", m.lr}, {"diverged_at", m.diverged_at},
                           {"last1000_mean", m.diverged_at < 0 ? json(m.last1000_mean) : json(nullptr)},
                           {"dataset_mse", m.diverged_at < 0 ? json(m.dataset_mse) : json(nullptr)}});
  const bool converged = r.models[r.best].diverged_at < 0 && r.models[r.best].last1000_mean < r.models[r.best].losses[0];
  ok = ok && converged;
  std::printf("Q2: %lld iterations x %zu learning rates on %s (%s) in %.2f s (%.3f us/iteration); best lr %g\n",
              (long long)cfg.iters, r.models.size(), device_name(r.device), r.impl.c_str(), r.seconds,
              r.us_per_iter, r.models[r.best].lr);
  for (const MlpModelResult& m : r.models) {
    if (m.diverged_at >= 0)
      std::printf("  lr %-8g diverged at iteration %lld\n", m.lr, (long long)m.diverged_at);
    else
      std::printf("  lr %-8g last-1000 mean loss %.4f, dataset MSE %.4f\n", m.lr, m.last1000_mean, m.dataset_mse);
  }
  return j;
}

// Q3: a grid over the course's 8 configurations (full on a GPU; reduced on a CPU: a few hundred
// steps each, evaluated on 2000 test images, labelled so), then the chosen configuration's full
// 2-epoch run with the whole test set. ImageNet weights when the torch hub cache has them,
// torchvision's random init otherwise (labelled).
json report_q3(const ReportOptions& opt, bool& ok) {
  const bool gpu = opt.device == Device::CUDA;
  TransferConfig base;
  base.device = opt.device;
  base.seed = opt.seed;
  base.out_dir = opt.out_dir;
  // With ImageNet's weights, the course's setting: a frozen pretrained backbone, conv1 and fc
  // train. Without them a frozen backbone is a frozen random one (random features: 80.3% after 2
  // epochs), so the whole network fine-tunes from torchvision's random init, on pixels standardised
  // with FashionMNIST's mean and std as training from scratch does (2 epochs, measured on the CPU:
  // the grid's pick, batch 64 / lr 0.01 / momentum 0.9, 88.76%; batch 16 / 0.01 / 0.9 88.35%
  // standardised against 87.14% on raw [0, 1] pixels).
  const bool imagenet = !locate_imagenet_weights().empty();
  base.weights = imagenet ? "" : "none";
  base.freeze = imagenet ? "backbone" : "none";
  base.normalize = !imagenet;
  const std::string why =
      imagenet ? "" : "no ImageNet weights, so the whole network fine-tunes from random init on standardised pixels";
  base.progress = !opt.quiet;
  TransferConfig grid = base;
  grid.grid = true;
  grid.pdf_name = "question3_grid.pdf";
  if (!gpu || opt.quick) {
    // The same number of images for every configuration, so that batch 64 is not favoured by
    // four times the data.
    grid.max_samples = opt.quick ? 320 : 9600;  // quick: 20 steps of batch 16, 5 of batch 64
    grid.eval_limit = opt.quick ? 300 : 2000;
    grid.label = cat(opt.quick ? "quick" : "reduced", " grid on the ", device_name(opt.device), ": ", grid.max_samples,
                     " training images per configuration, test accuracy on the first ", grid.eval_limit, " test images");
  } else {
    grid.label = "full grid: 2 epochs per configuration, the whole test set";
  }
  if (!why.empty()) grid.label += "; " + why;
  std::printf("Q3: %s\n", grid.label.c_str());
  std::fflush(stdout);
  const TransferResult best = run_transfer_train(grid);
  TransferConfig final_cfg = base;
  final_cfg.batch_size = best.batch_size;
  final_cfg.lr = best.lr;
  final_cfg.momentum = best.momentum;
  if (opt.quick) {
    final_cfg.max_steps = 60;
    final_cfg.eval_limit = 500;
    final_cfg.label = "quick: 60 steps, test accuracy on 500 test images";
  } else {
    final_cfg.label = "the grid's best configuration, 2 epochs, the whole test set";
  }
  if (!why.empty()) final_cfg.label += "; " + why;
  std::printf("Q3: %s\n", final_cfg.label.c_str());
  // The grid trained this batch size on this device: its speed says how long the final run takes.
  if (const double eta = estimate_transfer_seconds(final_cfg, best); std::isfinite(eta))
    std::printf("Q3: batch %lld, lr %g, momentum %g: expected to take about %s at the speed the grid measured\n",
                (long long)final_cfg.batch_size, final_cfg.lr, final_cfg.momentum, format_duration(eta).c_str());
  std::fflush(stdout);
  const TransferResult r = run_transfer_train(final_cfg);
  ok = ok && r.test_accuracy > (opt.quick ? 0.2 : 0.5);  // chance is 0.1
  return {{"grid_label", grid.label}, {"final_label", final_cfg.label}, {"weights", r.weights}, {"freeze", base.freeze},
          {"pixels", base.normalize ? "standardised with FashionMNIST's mean and std" : "ToTensor's [0, 1]"},
          {"batch_size", r.batch_size}, {"lr", r.lr}, {"momentum", r.momentum}, {"steps", r.steps},
          {"final_train_loss", r.final_train_loss}, {"test_loss", r.test_loss}, {"test_accuracy", r.test_accuracy},
          {"seconds", r.seconds}, {"images_per_second", r.images_per_second}};
}

// Q4: the homework's four tables for (x1 + x2)^2, (x1 - x2)^2 at (2, 4), and the expanded
// formulation for the optional question: text, JSON and question4.pdf.
json report_q4(const ReportOptions& opt, bool& ok) {
  const fs::path dir(opt.out_dir);
  const AdGraph sq = builtin_function("squared"), ex = builtin_function("expanded");
  const AdResult a = autodiff(sq, {2, 4}), b = autodiff(ex, {2, 4});
  write_file_atomic((dir / "q4_autodiff.txt").string(), render_text(sq, a) + "\n\n" + render_text(ex, b));
  write_file_atomic((dir / "q4_squared.json").string(), render_json(sq, a) + "\n");
  write_file_atomic((dir / "q4_expanded.json").string(), render_json(ex, b) + "\n");
  run_plot("plot_autodiff.py", {(dir / "q4_squared.json").string(), (dir / "q4_expanded.json").string(),
                                (dir / "question4.pdf").string()});
  const bool agree = a.jacobian_forward == a.jacobian_reverse && b.jacobian_forward == b.jacobian_reverse &&
                     a.jacobian_reverse == b.jacobian_reverse;
  ok = ok && agree;
  std::printf("Q4: Jacobian at (2, 4) = [[%g, %g], [%g, %g]], forward and reverse agree: %s; %d vs %d operations\n",
              a.jacobian_reverse[0][0], a.jacobian_reverse[0][1], a.jacobian_reverse[1][0], a.jacobian_reverse[1][1],
              agree ? "yes" : "NO", a.operations, b.operations);
  return {{"jacobian", a.jacobian_reverse}, {"modes_agree", agree}, {"operations_squared", a.operations},
          {"operations_expanded", b.operations}};
}

// Q5: the gradient checks on the report's device, and question5.pdf (the derivation + the table).
json report_q5(const ReportOptions& opt, bool& ok) {
  const fs::path dir(opt.out_dir);
  std::string txt = cat("handgrad gradcheck all --device ", device_name(opt.device), "\n");
  bool pass = true;
  json rows = json::array();
  for (const GradcheckResult& r : run_gradcheck("all", opt.device, opt.seed)) {
    txt += fmt("%-7s %-52s %.2e %s\n", r.op.c_str(), r.what.c_str(), r.worst, r.pass ? "ok" : "FAIL");
    rows.push_back({{"op", r.op}, {"check", r.what}, {"worst_relative_error", r.worst}, {"pass", r.pass}});
    pass = pass && r.pass;
  }
  write_file_atomic((dir / "q5_gradcheck.txt").string(), txt);
  run_plot("plot_fc_gradient.py", {(dir / "q5_gradcheck.txt").string(), (dir / "question5.pdf").string()});
  ok = ok && pass;
  std::printf("Q5: dL/dW = X^T dL/dY; gradient checks %s\n", pass ? "pass" : "FAIL");
  return {{"checks", rows}, {"pass", pass}};
}

// The homework's question1-3.py (python/homework/): copied into the report folder and run, each
// in a scratch folder (their own plots must not replace the report's), through `import handgrad`.
// Where to find them, the module and the Python it was built for: the source tree and build folder
// this binary came from (the environment's handgrad, if installed, otherwise).
std::string read_text(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

std::string last_line(std::string text) {
  while (!text.empty() && text.back() == '\n') text.pop_back();
  return text.substr(text.rfind('\n') + 1);  // npos + 1 == 0: the whole text
}

// The scripts run in a folder of their own: every folder they take from the environment is made
// absolute, so that a relative one (or our ./data/fashion-mnist) still names what it names here.
std::vector<std::pair<std::string, std::string>> script_environment(const std::string& module_dir) {
  auto absolute = [](const std::string& p) { return p.empty() ? p : fs::absolute(p).string(); };
  std::vector<std::pair<std::string, std::string>> env;
  std::string pythonpath = module_dir;
  if (const char* prev = std::getenv("PYTHONPATH")) {
    std::stringstream entries(prev);
    for (std::string e; std::getline(entries, e, ':');)
      if (!e.empty()) pythonpath += (pythonpath.empty() ? "" : ":") + absolute(e);
  }
  if (!pythonpath.empty()) env.emplace_back("PYTHONPATH", pythonpath);
  if (const std::string data = find_fashion_mnist(""); !data.empty()) env.emplace_back("HANDGRAD_DATA", absolute(data));
  if (const char* torch_home = std::getenv("TORCH_HOME"); torch_home && *torch_home)
    env.emplace_back("TORCH_HOME", absolute(torch_home));
  return env;
}

json report_python(const ReportOptions& opt, bool& ok) {
  const fs::path dir(opt.out_dir);
  const fs::path scripts = find_project_folder("python/homework", "question1.py");
  json out = json::object();
  if (scripts.empty()) {
    std::printf("Python scripts: python/homework/ not found next to this handgrad: FAIL\n");
    ok = false;
    return {{"error", "python/homework not found"}};
  }
  // The module of this build (build/python, beside the binary), else whatever the Python imports.
  std::string pythonpath;
  std::error_code ec;
  const fs::path exe = fs::read_symlink("/proc/self/exe", ec);
  if (!ec && fs::exists(exe.parent_path() / "python" / "handgrad" / "__init__.py"))
    pythonpath = fs::absolute(exe.parent_path() / "python").string();
#ifdef HANDGRAD_PYTHON_EXECUTABLE
  std::string python = HANDGRAD_PYTHON_EXECUTABLE;
#else
  std::string python = "python3";
#endif
  if (const char* env = std::getenv("HANDGRAD_PYTHON")) python = env;
  for (const char* name : {"question1.py", "question2.py", "question3.py"})
    write_file_atomic((dir / name).string(), read_text(scripts / name));
  // A build without the module (the GPU check's staged build: no pybind11 for its Python) and no
  // installed handgrad: the scripts go into the zip unrun, and the report says so.
  ProcessOptions quiet;
  quiet.quiet = true;
  if (pythonpath.empty() && !run_process({python, "-c", "import handgrad"}, quiet).ok()) {
    std::printf("Python: question1-3.py not run: this handgrad was built without its Python module and %s "
                "cannot import one (apt-get install pybind11-dev python3-dev libdlpack-dev, rebuild)\n",
                python.c_str());
    return {{"skipped", "no handgrad module for " + python}};
  }
  const fs::path scratch = dir / "python-check";
  fs::create_directories(scratch);
  bool all = true;
  for (const char* name : {"question1.py", "question2.py", "question3.py"}) {
    // Q3 trains for an hour on a CPU: the script's quick mode. Q1 and Q2 take seconds in full.
    const bool quick = opt.quick || std::string(name) == "question3.py";
    const fs::path log = scratch / (std::string(name) + ".log");
    std::vector<std::string> argv = {python, fs::absolute(dir / name).string(), "--device", device_name(opt.device)};
    if (quick) argv.push_back("--quick");
    if (std::string(name) != "question1.py") argv.insert(argv.end(), {"--out", "."});
    ProcessOptions po;
    po.cwd = scratch.string();
    po.output = log.string();
    po.timeout_s = 1200;
    po.env = script_environment(pythonpath);
    const double t = now_s();
    const ProcessResult r = run_process(argv, po);  // Ctrl-C here ends the report too
    const int code = r.signal ? 128 + r.signal : r.exit_code;
    const std::string tail = r.timed_out ? "timed out after 1200 s" : last_line(read_text(log));
    all = all && r.ok();
    std::printf("Python: %s%s -> exit %d in %.1f s: %s\n", name, quick ? " --quick" : "", code, now_s() - t, tail.c_str());
    out[name] = {{"exit_code", code}, {"quick", quick}, {"seconds", now_s() - t}, {"last_line", tail},
                 {"log", (fs::path("python-check") / log.filename()).string()}};
  }
  ok = ok && all;
  out["pass"] = all;
  return out;
}

}  // namespace

int run_report(const ReportOptions& opt) {
  const std::vector<std::string>& all = report_exercises();
  for (const std::string& o : opt.only)
    HG_REQUIRE(std::find(all.begin(), all.end(), o) != all.end(), "--only: unknown exercise '", o,
               "' (this handgrad has: q1, q2, q3, q4, q5, scripts)");
  auto wanted = [&](const std::string& q) {
    return opt.only.empty() || std::find(opt.only.begin(), opt.only.end(), q) != opt.only.end();
  };
  check_output_dir(opt.out_dir, "--out-dir");
  // Plots written from here on are this run's (the zip takes only those); the slack covers the
  // kernel's coarse file timestamps (a tick behind the clock).
  const fs::file_time_type run_start = fs::file_time_type::clock::now() - std::chrono::milliseconds(50);
  const double t0 = now_s();
  bool ok = true;
  json summary = {{"commit", build_commit()}, {"device", device_name(opt.device)}, {"quick", opt.quick},
                  {"seed", opt.seed}};
  struct Exercise {
    const char* key;
    const char* title;
    json (*run)(const ReportOptions&, bool&);
  };
  for (const Exercise& e : {Exercise{"q1", "Q1 einsum", report_q1}, Exercise{"q2", "Q2 MLP", report_q2},
                            Exercise{"q3", "Q3 ResNet18 transfer learning", report_q3},
                            Exercise{"q4", "Q4 autodiff", report_q4}, Exercise{"q5", "Q5 FC gradient", report_q5}}) {
    if (!wanted(e.key)) continue;
    std::printf("[report] %s ...\n", e.title);
    std::fflush(stdout);
    const double t = now_s();
    summary[e.key] = e.run(opt, ok);
    std::printf("[report] %.2s done in %.1f s\n", e.title, now_s() - t);  // "Q1 done in ..."
  }
  if (wanted("scripts")) {  // the checklist's question1-3.py, run through the Python module
    std::printf("[report] question1-3.py ...\n");
    std::fflush(stdout);
    summary["python_scripts"] = report_python(opt, ok);
  }
  const double total = now_s() - t0;
  summary["seconds"] = total;
  rusage usage{};
  ::getrusage(RUSAGE_SELF, &usage);  // this process's peak (the question scripts are their own)
  summary["peak_rss_mb"] = usage.ru_maxrss / 1024.0;
  summary["all_checks_passed"] = ok;

  const SystemInfo info = system_info();
  std::string md = "# handgrad report\n\n";
  md += cat("- commit: `", build_commit(), "`\n- device: ", device_name(opt.device));
  if (opt.device == Device::CUDA && !info.gpus.empty()) md += cat(" (", info.gpus[0].name, ")");
  md += cat("\n- CPU threads: ", info.cpu_threads, ", CPU GEMM: ", info.cpu_gemm,
            ", CPU convolutions: ", cpu::conv2d_nhwc_backend(), "\n");
  md += cat("- seed: ", opt.seed, opt.quick ? ", quick sizes" : "", "\n");
  md += fmt("- total time: %.1f s, peak memory (RSS) %.0f MB\n- all checks passed: %s\n\n", total,
            summary["peak_rss_mb"].get<double>(), ok ? "yes" : "NO");
  if (summary.contains("q1")) {
    md += "## Q1: einsum\n\nFiles: `q1_einsum.txt`, `q1_einsum.json`, `q1/*.npy` (inputs and outputs of the worked examples).\n\n";
    md += "| op | equation | A | ms | GB/s | rel. error | check |\n|---|---|---|---|---|---|---|\n";
    for (const json& e : summary["q1"]["timed"])
      md += fmt("| %s | `%s` | %s | %.3f | %.1f | %.1e | %s |\n", e["op"].get<std::string>().c_str(),
                e["equation"].get<std::string>().c_str(), shape_str(e["a"].get<Shape>()).c_str(),
                e["ms"].get<double>(), e["GB_per_s"].get<double>(),
                e["rel_error_vs_float64_samples"].get<double>(), e["pass"].get<bool>() ? "ok" : "FAIL");
  }
  if (summary.contains("q2")) {
    const json& q = summary["q2"];
    md += fmt("\n## Q2: two-layer MLP, batch-1 SGD without autograd\n\nFiles: `Q2_output.txt` (best lr, the "
              "course's format), `mlp_loss.csv`, `question2_result.pdf`, `mlp_summary.json`. %lld iterations on "
              "%s (%s), %.3f us/iteration.\n\n| lr | result | last-1000 mean loss | dataset MSE |\n|---|---|---|---|\n",
              q["iters"].get<long long>(), q["device"].get<std::string>().c_str(),
              q["impl"].get<std::string>().c_str(), q["us_per_iter"].get<double>());
    for (const json& m : q["models"]) {
      const long long div = m["diverged_at"].get<long long>();
      if (div >= 0)
        md += fmt("| %g | diverged at iteration %lld | - | - |\n", m["lr"].get<double>(), div);
      else
        md += fmt("| %g | converged%s | %.4f | %.4f |\n", m["lr"].get<double>(),
                  m["lr"].get<double>() == q["best_lr"].get<double>() ? " (best)" : "", m["last1000_mean"].get<double>(),
                  m["dataset_mse"].get<double>());
    }
  }
  if (summary.contains("q3")) {
    const json& q = summary["q3"];
    md += fmt("\n## Q3: ResNet18 transfer learning on FashionMNIST\n\nStarting weights: %s; trained: %s. Grid: %s "
              "(`q3_grid.md`, `question3_grid.pdf`). Final run (%s): batch %lld, lr %g, momentum %g, %lld steps, "
              "test accuracy **%.2f%%**, test loss %.4f, %.0f images/s (`question3_result.pdf`, `q3_*.csv`).\n",
              q["weights"].get<std::string>().c_str(),
              q["freeze"].get<std::string>() == "none" ? "the whole network" : "conv1 and fc (the backbone frozen)",
              q["grid_label"].get<std::string>().c_str(),
              q["final_label"].get<std::string>().c_str(), q["batch_size"].get<long long>(), q["lr"].get<double>(),
              q["momentum"].get<double>(), q["steps"].get<long long>(), 100 * q["test_accuracy"].get<double>(),
              q["test_loss"].get<double>(), q["images_per_second"].get<double>());
  }
  if (summary.contains("q4"))
    md += "\n## Q4: automatic differentiation\n\nThe four tables at (2, 4): `q4_autodiff.txt`, `q4_squared.json`, "
          "`question4.pdf` (with the expanded formulation for the optional question). Forward and reverse Jacobians "
          "agree.\n";
  if (summary.contains("q5"))
    md += cat("\n## Q5: FC-layer gradient\n\ndL/dW = X^T dL/dY, derived in `question5.pdf` (source: "
              "docs/fc_gradient.md); gradient checks: ", summary["q5"]["pass"].get<bool>() ? "all pass" : "FAILURES",
              " (`q5_gradcheck.txt`).\n");
  if (summary.contains("python_scripts") && !summary["python_scripts"].contains("skipped")) {
    md += "\n## question1-3.py\n\nThe checklist's scripts, computing through `import handgrad` and checking against "
          "PyTorch (torch.einsum; the manual-backward MLP replayed in torch; torchvision's ResNet18 on handgrad's "
          "trained weights). Run here from this folder (logs in `python-check/`):\n\n| script | exit | last line |\n|---|---|---|\n";
    for (const char* name : {"question1.py", "question2.py", "question3.py"})
      if (summary["python_scripts"].contains(name)) {
        const json& r = summary["python_scripts"][name];
        md += cat("| `", name, r["quick"].get<bool>() ? " --quick" : "", "` | ", r["exit_code"].get<int>(), " | ",
                  r["last_line"].get<std::string>(), " |\n");
      }
  }
  write_file_atomic((fs::path(opt.out_dir) / "README.md").string(), md);
  write_file_atomic((fs::path(opt.out_dir) / "report.json").string(), summary.dump(2) + "\n");
  // The deliverables in one archive: what this run wrote (a subset run or a missing plot leaves
  // gaps; a file an earlier run left - another seed, a killed run - is not this report's).
  std::vector<std::pair<std::string, std::string>> files;
  for (const char* f : {"README.md", "report.json", "question1.py", "question2.py", "question3.py", "q1_einsum.txt",
                        "Q2_output.txt", "question2_result.pdf",
                        "mlp_loss.csv", "question3_result.pdf", "question3_grid.pdf", "q3_grid.md", "q4_autodiff.txt",
                        "q4_squared.json", "question4.pdf", "q5_gradcheck.txt", "question5.pdf"}) {
    const fs::path p = fs::path(opt.out_dir) / f;
    std::error_code ec;
    if (!fs::is_regular_file(fs::symlink_status(p, ec))) continue;  // never a link to elsewhere
    // Files handgrad wrote itself are known by name; the plots (written by matplotlib) by a
    // modification time inside this run.
    const bool pdf = p.extension() == ".pdf";
    const auto mtime = fs::last_write_time(p, ec);
    if (ec) continue;
    if (pdf ? (mtime >= run_start && mtime <= fs::file_time_type::clock::now() + std::chrono::milliseconds(50))
            : written_by_this_process(p.string()))
      files.emplace_back(f, p.string());
  }
  write_zip((fs::path(opt.out_dir) / "handgrad-hw1.zip").string(), files);
  std::printf("[report] wrote %s/ in %.1f s: %s\n", opt.out_dir.c_str(), total,
              ok ? "all checks passed" : "SOME CHECKS FAILED");
  return ok ? 0 : 1;
}

}  // namespace handgrad
