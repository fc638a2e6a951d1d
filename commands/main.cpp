// handgrad: the command line. Each subcommand parses its flags into a config, runs, and maps
// errors to exit codes: 0 ok, 1 a check failed or an internal error, 2 bad input (one line on
// stderr, always).
#include <CLI/CLI.hpp>
#include <nlohmann/json.hpp>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <sstream>

#include "commands/report.h"
#include "host/atomic_file.h"
#include "host/checkpoint.h"
#include "host/device.h"
#include "host/einsum.h"
#include "host/gradcheck.h"
#include "host/memory.h"
#include "host/npy.h"
#include "kernels/nn/conv2d.h"
#include "models/autodiff.h"
#include "models/mlp.h"
#include "models/transfer.h"

using namespace handgrad;

namespace {

int cmd_info(const std::string& device_flag) {
  const SystemInfo s = system_info();
  std::printf("handgrad %s (commit %s)\n", HANDGRAD_VERSION, build_commit());
  std::printf("CPU: %d OpenMP threads, GEMM: %s, convolutions: %s\n", s.cpu_threads, s.cpu_gemm.c_str(),
              cpu::conv2d_nhwc_backend().c_str());
  if (!s.built_with_cuda) {
    std::printf("CUDA: not built (CPU-only build)\n");
  } else {
    auto ver = [](int v) { return cat(v / 1000, ".", (v % 1000) / 10); };
    std::printf("CUDA runtime %s (linked in), driver %s\n", ver(s.cuda_runtime_version).c_str(),
                s.cuda_driver_version ? ver(s.cuda_driver_version).c_str() : "none");
    for (const CudaLibrary& l : s.cuda_libraries)
      if (l.path.empty())
        std::printf("%s: %s %s: --device cuda cannot run\n", l.label.c_str(), l.soname.c_str(), l.why_not.c_str());
      else
        std::printf("%s %s: %s (opened at the first GPU use)\n", l.label.c_str(), l.version.c_str(), l.path.c_str());
    if (s.gpus.empty()) std::printf("GPU: none usable (%s)\n", s.unavailable_reason.c_str());
    for (const GpuInfo& g : s.gpus)
      std::printf("GPU %d: %s, compute capability %d.%d, %.1f GiB, %d SMs\n", g.index,
                  g.name.c_str(), g.cc_major, g.cc_minor, g.total_mem / 1073741824.0, g.sm_count);
  }
  const Device d = parse_device(device_flag);
  std::printf("--device %s uses: %s\n", device_flag.c_str(), device_name(d));
  return 0;
}

struct EinsumArgs {
  std::string equation;
  std::vector<std::string> inputs;
  std::string output;
  std::string device = "auto";
  std::string order = "auto";
  bool plan = false;
};

int cmd_einsum(const EinsumArgs& a) {
  const Device dev = parse_device(a.device);
  HG_REQUIRE(!a.output.empty(), "-o: the output file name is empty");
  check_output_file(a.output, "-o");
  std::vector<Tensor> host, dev_tensors;
  for (const std::string& path : a.inputs) host.push_back(read_npy_f32(path));
  std::vector<const Tensor*> args;
  for (Tensor& t : host) {
    dev_tensors.push_back(t.to(dev));
  }
  for (Tensor& t : dev_tensors) args.push_back(&t);
  EinsumPlanLog log;
  const EinsumOrder order = a.order == "left-to-right" ? EinsumOrder::LeftToRight
                            : a.order == "greedy"      ? EinsumOrder::Greedy
                                                       : EinsumOrder::Auto;
  const auto t0 = std::chrono::steady_clock::now();
  Tensor out = einsum(a.equation, args, &log, order);
  synchronize(dev);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  write_npy(a.output, out);
  if (a.plan) {
    for (const std::string& s : log.order) std::printf("  order: %s\n", s.c_str());
    for (const std::string& s : log.steps) std::printf("  plan: %s\n", s.c_str());
  }
  std::printf("%s -> %s %s on %s in %.3f ms (first call, includes setup)\n", a.equation.c_str(),
              a.output.c_str(), shape_str(out.shape()).c_str(), device_name(dev), ms);
  return 0;
}

// "0.03,0.01,1e-3" -> {0.03, 0.01, 0.001}; `flag` names the option in the error message.
std::vector<double> parse_number_list(const std::string& text, const char* flag) {
  std::vector<double> out;
  HG_REQUIRE(!text.empty(), flag, ": needs at least one number");
  std::vector<std::string> items(1);
  for (char c : text) {  // split at every comma: "1e-5," has an empty second item
    if (c == ',') items.emplace_back();
    else items.back().push_back(c);
  }
  for (const std::string& item : items) {
    size_t used = 0;
    double v = 0;
    try {
      v = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    HG_REQUIRE(used > 0 && used == item.size(), flag, ": '", item, "' is not a number");
    HG_REQUIRE(std::isfinite(v), flag, ": '", item, "' is not a finite number");
    out.push_back(v);
  }
  return out;
}

int cmd_mlp(MlpConfig cfg, const std::string& device, const std::string& lr_text) {
  cfg.device = parse_device(device);
  if (!lr_text.empty()) {
    const std::vector<double> lrs = parse_number_list(lr_text, "--lr");
    cfg.lrs.assign(lrs.begin(), lrs.end());
  }
  const MlpResult r = run_mlp(cfg);
  std::printf("Q2 MLP on %s (%s): N=%lld D=%lld H=%lld, %lld iterations in %.3f s = %.3f us/iteration\n",
              device_name(r.device), r.impl.c_str(), (long long)r.n, (long long)r.d, (long long)r.h,
              (long long)cfg.iters, r.seconds, r.us_per_iter);
  std::printf("  %-10s %-14s %-14s %-16s %s\n", "lr", "final loss", "last-1000 mean", "dataset MSE", "status");
  for (size_t m = 0; m < r.models.size(); ++m) {
    const MlpModelResult& x = r.models[m];
    const std::string status = x.diverged_at >= 0 ? cat("diverged at iteration ", x.diverged_at + 1)
                                                   : (int(m) == r.best ? "converged (best)" : "converged");
    std::printf("  %-10g %-14.6g %-14.6g %-16.6g %s\n", x.lr, x.final_loss, x.last1000_mean, x.dataset_mse,
                status.c_str());
  }
  std::string written;
  for (const std::string& f : r.files_written) written += (written.empty() ? "" : ", ") + f;
  if (!written.empty()) std::printf("wrote %s\n", written.c_str());
  return 0;
}

// Lists a checkpoint's tensors: name, dtype, shape and the sum of the values (a checksum that
// tests compare with PyTorch's).
int cmd_inspect(const std::string& path, bool as_json) {
  const StateDict sd = read_state_dict(path);
  nlohmann::ordered_json j = nlohmann::ordered_json::array();
  for (const auto& [name, t] : sd.entries) {
    double sum = 0;
    for (int64_t i = 0; i < t.numel(); ++i)
      sum += t.dtype() == DType::F32 ? double(t.data<float>()[i]) : double(t.data<int64_t>()[i]);
    if (as_json)
      j.push_back({{"name", name}, {"dtype", dtype_name(t.dtype())}, {"shape", t.shape()}, {"sum", sum}});
    else
      std::printf("%-40s %-8s %-20s sum %.6g\n", name.c_str(), dtype_name(t.dtype()), shape_str(t.shape()).c_str(), sum);
  }
  if (as_json) std::printf("%s\n", j.dump().c_str());
  else std::printf("%zu tensors in %s\n", sd.entries.size(), path.c_str());
  return 0;
}

// CLI11 reads "" as 0, "-1" as 2^64 - 1 for an unsigned option, clamps values out of range and
// takes hex: every numeric flag must hold a decimal number that fits its type (int64 / uint64 for
// whole numbers), recursively, every subcommand's.
void harden_numeric_flags(CLI::App* app) {
  for (CLI::Option* opt : app->get_options()) {
    const std::string type = opt->get_type_name();
    if (type != "INT" && type != "UINT" && type != "FLOAT") continue;
    opt->check(CLI::Validator(
        [type](std::string& v) -> std::string {
          const size_t b = v.find_first_not_of(" \t"), e = v.find_last_not_of(" \t");
          if (b == std::string::npos) return "must not be empty";
          const std::string t = v.substr(b, e - b + 1);
          if (t.find_first_of("xX") != std::string::npos) return "must be a decimal number, got '" + v + "'";
          if (type == "FLOAT") return "";
          std::from_chars_result r{};
          if (type == "UINT") {
            uint64_t x = 0;
            r = std::from_chars(t.data(), t.data() + t.size(), x);
          } else {
            int64_t x = 0;
            r = std::from_chars(t.data(), t.data() + t.size(), x);
          }
          if (r.ec == std::errc::result_out_of_range) return "is out of range, got '" + v + "'";
          if (r.ec != std::errc() || r.ptr != t.data() + t.size())
            return type == "UINT" ? "must be a whole number >= 0, got '" + v + "'" : "must be a whole number, got '" + v + "'";
          return "";
        },
        "", "NUMBER"));
  }
  for (CLI::App* sub : app->get_subcommands({})) harden_numeric_flags(sub);
}

}  // namespace

int main(int argc, char** argv) {
  try {
    check_thread_count();
  } catch (const UserError& e) {
    std::fprintf(stderr, "handgrad: error: %s\n", e.what());
    return 2;
  }
  flush_denormals_to_zero();
  // Results go to stdout, progress to stderr: line by line, a log of both (`> log 2>&1`, a pipe)
  // keeps them in the order they happened, and a line is there as soon as it is printed.
  std::setvbuf(stdout, nullptr, _IOLBF, BUFSIZ);
  CLI::App app{"handgrad: the COMP4901Y HW1 exercises on handwritten CUDA kernels (CPU twin included)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(HANDGRAD_VERSION) + " (" + build_commit() + ")");
  app.fallthrough();  // the options below may follow the subcommand
  std::string max_memory;
  app.add_option("--max-memory", max_memory,
                 "the memory budget: hold at most this much host memory, refusing an allocation that would pass it "
                 "(e.g. 8G; default: what the cgroup's limit or the available memory leaves; also $HANDGRAD_MAX_MEMORY)");

  std::string info_device = "auto";
  CLI::App* info = app.add_subcommand("info", "Devices, library versions, and the backend --device auto picks");
  info->add_option("--device", info_device, "auto|cpu|cuda")->capture_default_str();

  EinsumArgs ea;
  CLI::App* ein = app.add_subcommand("einsum", "Einstein summation on .npy files (torch.einsum semantics)");
  ein->add_option("equation", ea.equation, "e.g. \"abcd,ed->abce\"")->required();
  ein->add_option("inputs", ea.inputs, "input .npy files (float32 or float64)")->required();
  ein->add_option("-o,--output", ea.output, "output .npy (float32)")->required();
  ein->add_option("--device", ea.device, "auto|cpu|cuda")->capture_default_str();
  ein->add_flag("--plan", ea.plan,
                "print the contraction order (FLOPs, intermediate sizes, against left to right) and how each step was "
                "lowered onto kernels (ellipsis dims print as digits)");
  ein->add_option("--order", ea.order,
                  "auto (fewest FLOPs, as torch with opt_einsum) | greedy (opt_einsum's greedy alone) | "
                  "left-to-right (as torch without)")
      ->check(CLI::IsMember({"auto", "greedy", "left-to-right"}))
      ->capture_default_str();

  ReportOptions ro;
  std::string report_device = "auto", only;
  CLI::App* rep = app.add_subcommand("report", "Run the homework's exercises and write results/");
  rep->add_option("--out-dir", ro.out_dir, "output folder")->capture_default_str();
  rep->add_option("--device", report_device, "auto|cpu|cuda")->capture_default_str();
  rep->add_option("--seed", ro.seed, "seed of every random draw")->capture_default_str();
  rep->add_flag("--quick", ro.quick, "small sizes: finishes in minutes on a 2-core CPU");
  rep->add_flag("--quiet", ro.quiet, "no progress lines (the results are printed all the same)");
  rep->add_option("--only", only, "comma-separated subset of q1, q2, q3, q4, q5, scripts (question1-3.py), e.g. q1")
      ->check(CLI::Validator(
          [](std::string& v) {  // '' or ',,' would otherwise mean every exercise
            return v.find_first_not_of(',') == std::string::npos ? std::string("names no exercise (e.g. --only q1,q3)")
                                                                 : std::string();
          },
          "", "LIST"));

  MlpConfig mc;
  std::string mlp_device = "auto", mlp_lr;
  bool no_plot = false;
  CLI::App* mlp = app.add_subcommand("mlp", "Q2: two-layer ReLU MLP trained by batch-1 SGD, derivatives by hand");
  mlp->add_option("--n", mc.n, "data points")->capture_default_str();
  mlp->add_option("--d", mc.d, "input features")->capture_default_str();
  mlp->add_option("--h", mc.h, "hidden units")->capture_default_str();
  mlp->add_option("--iters", mc.iters, "SGD iterations (one sample each)")->capture_default_str();
  mlp->add_option("--lr", mlp_lr, "learning rate, or a comma-separated list for a sweep (default 1e-5)")
      ->check(CLI::Validator([](std::string& v) { return v.empty() ? std::string("must not be empty") : std::string(); },
                             "", "LIST"));
  mlp->add_option("--log-every", mc.log_every, "record the loss every this many iterations")->capture_default_str();
  mlp->add_option("--seed", mc.seed, "seed of the data, weights and sample order")->capture_default_str();
  mlp->add_option("--device", mlp_device, "auto|cpu|cuda")->capture_default_str();
  mlp->add_option("--impl", mc.impl, "auto|cpu|kernels|graph|fused (auto: fused on a GPU)")->capture_default_str();
  mlp->add_option("--out-dir", mc.out_dir, "output folder")->capture_default_str();
  mlp->add_flag("--no-plot", no_plot, "skip question2_result.pdf");
  mlp->add_option("--x", mc.x_path, "replay: X.npy [n, d] float32");
  mlp->add_option("--y", mc.y_path, "replay: Y.npy [n] or [n, 1]");
  mlp->add_option("--w1", mc.w1_path, "replay: W1.npy [d, h]");
  mlp->add_option("--w2", mc.w2_path, "replay: W2.npy [h] or [h, 1]");
  mlp->add_option("--indices", mc.indices_path, "replay: int64 sample index of each iteration");
  mlp->add_option("--save-weights", mc.save_weights_dir, "write the trained W1.npy, W2.npy here");

  std::string inspect_path, convert_in, convert_out;
  bool inspect_json = false;
  CLI::App* insp = app.add_subcommand("inspect", "List the tensors of a .pth (torch.save) or .safetensors file");
  insp->add_option("file", inspect_path, "checkpoint")->required();
  insp->add_flag("--json", inspect_json, "one JSON array instead of a table");
  CLI::App* conv = app.add_subcommand("convert", "Rewrite a .pth or .safetensors checkpoint as safetensors");
  conv->add_option("input", convert_in, "checkpoint to read")->required();
  conv->add_option("output", convert_out, "safetensors file to write")->required();

  TransferConfig tc;
  std::string tr_device = "auto";
  bool no_shuffle = false, no_eval = false, tr_no_plot = false;
  CLI::App* transfer = app.add_subcommand("transfer", "Q3: ResNet18 transfer learning on FashionMNIST");
  transfer->require_subcommand(1);
  CLI::App* ttrain = transfer->add_subcommand("train", "fine-tune (or --grid: the course's 8 configurations)");
  ttrain->add_option("--weights", tc.weights, "ImageNet weights (.pth/.safetensors), or none for random init");
  ttrain->add_option("--checkpoint", tc.checkpoint, "start from an adapted model (1-channel conv1, 10-class fc)");
  ttrain->add_option("--conv1-init", tc.conv1_init, "rgb-sum|random")->capture_default_str();
  ttrain->add_option("--freeze", tc.freeze, "backbone|none")->capture_default_str();
  ttrain->add_option("--batch-size", tc.batch_size)->capture_default_str();
  ttrain->add_option("--lr", tc.lr)->capture_default_str();
  ttrain->add_option("--momentum", tc.momentum)->capture_default_str();
  ttrain->add_option("--epochs", tc.epochs)->capture_default_str();
  ttrain->add_option("--max-steps", tc.max_steps, "stop after this many steps (0: no limit)")->capture_default_str();
  ttrain->add_flag("--no-shuffle", no_shuffle, "keep the file order (as the course sample)");
  ttrain->add_flag("--no-eval", no_eval, "skip the test-set evaluation");
  ttrain->add_flag("--normalize", tc.normalize, "standardise pixels with FashionMNIST's mean and std");
  ttrain->add_option("--seed", tc.seed)->capture_default_str();
  ttrain->add_option("--data-dir", tc.data_dir, "folder with the four FashionMNIST .gz files");
  ttrain->add_option("--device", tr_device, "auto|cpu|cuda")->capture_default_str();
  ttrain->add_option("--out-dir", tc.out_dir)->capture_default_str();
  ttrain->add_option("--save-checkpoint", tc.save_checkpoint, "write the trained model (safetensors)");
  ttrain->add_option("--save-momentum", tc.save_momentum, "write the momentum buffers (safetensors)");
  ttrain->add_option("--dump-branches", tc.dump_branches,
                     "write each step's ReLU outputs and max-pool winners to DIR/stepN.safetensors (parity tests)");
  ttrain->add_option("--log-every", tc.log_every, "log the loss every this many batches")->capture_default_str();
  ttrain->add_option("--eval-limit", tc.eval_limit, "evaluate on the first N test images (0: all)");
  ttrain->add_flag("--grid", tc.grid, "batch 16/64 x lr 0.01/0.03 x momentum 0/0.9");
  ttrain->add_flag("--tf32", tc.tf32, "GPU: allow TF32 tensor-core convolutions (PyTorch's default)");
  ttrain->add_flag("--cudnn-find", tc.cudnn_find, "GPU: choose convolution algorithms by timing them; list the choices");
  ttrain->add_flag("--cuda-graph", tc.cuda_graph, "GPU: replay each full-batch training step from a CUDA graph");
  ttrain->add_flag("--profile", tc.profile, "print where each step's time goes, per layer family (GPU: synchronises per layer)")
      ->excludes("--cuda-graph");
  ttrain->add_flag("--no-plot", tr_no_plot, "skip question3_result.pdf");
  bool tr_quiet = false;
  ttrain->add_flag("--quiet", tr_quiet, "no progress lines (the results are printed all the same)");
  TransferEvalConfig te;
  std::string te_device = "auto";
  CLI::App* teval = transfer->add_subcommand("eval", "test loss and accuracy of a checkpoint (eval mode)");
  teval->add_option("--checkpoint", te.checkpoint, "adapted model (.pth or .safetensors)")->required();
  teval->add_option("--limit", te.limit, "the first N test images (0: all)");
  teval->add_option("--dump-logits", te.dump_logits, "write the logits [N, 10] as .npy");
  teval->add_option("--data-dir", te.data_dir);
  teval->add_flag("--normalize", te.normalize);
  teval->add_option("--device", te_device, "auto|cpu|cuda")->capture_default_str();
  teval->add_flag("--tf32", te.tf32, "GPU: allow TF32 tensor-core convolutions");
  teval->add_flag("--cudnn-find", te.cudnn_find, "GPU: choose convolution algorithms by timing them; list the choices");
  teval->add_flag("--quiet", te.quiet, "no progress and no summary line");

  std::string ad_function = "squared", ad_expr, ad_point = "2,4";
  bool ad_json = false;
  CLI::App* ad = app.add_subcommand("autodiff", "Q4: forward- and reverse-mode AD traces, table by table");
  ad->add_option("--function", ad_function, "squared|expanded")->capture_default_str();
  ad->add_option("--expr", ad_expr, "your own functions, e.g. \"y1 = (x1 + x2)^2; y2 = exp(x1) * x2\"")
      ->check(CLI::Validator([](std::string& v) { return v.empty() ? std::string("must not be empty") : std::string(); },
                             "", "TEXT"));
  ad->add_option("--point", ad_point, "comma-separated input values")->capture_default_str();
  ad->add_flag("--json", ad_json, "one JSON document instead of text tables");

  std::string gc_op = "all", gc_device = "auto";
  CLI::App* gc = app.add_subcommand("gradcheck", "Q5: backward kernels against float64 finite differences");
  gc->add_option("op", gc_op, "linear|relu|mse|xent|conv|all")->capture_default_str();
  gc->add_option("--device", gc_device, "auto|cpu|cuda")->capture_default_str();

  harden_numeric_flags(&app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "handgrad: error: %s (see --help)\n", one_line(e.what()).c_str());
    return 2;
  }

  try {
    if (app.count("--max-memory")) set_memory_budget(parse_memory_size(max_memory, "--max-memory"));
    memory_budget();  // a bad $HANDGRAD_MAX_MEMORY is an error now, not at the first large allocation
    if (*info) return cmd_info(info_device);
    if (*ein) return cmd_einsum(ea);
    if (*insp) return cmd_inspect(inspect_path, inspect_json);
    if (*gc) {
      const Device dev = parse_device(gc_device);
      const std::vector<GradcheckResult> results = run_gradcheck(gc_op, dev);
      bool ok = true;
      std::printf("gradcheck on %s (float32 kernels vs float64 central differences)\n", device_name(dev));
      for (const GradcheckResult& r : results) {
        std::printf("  %-7s %-52s worst relative error %.2e  %s\n", r.op.c_str(), r.what.c_str(), r.worst,
                    r.pass ? "ok" : "FAIL");
        ok = ok && r.pass;
      }
      return ok ? 0 : 1;
    }
    if (*ad) {
      const AdGraph g = ad_expr.empty() ? builtin_function(ad_function) : parse_functions(ad_expr);
      const std::vector<double> point = parse_number_list(ad_point, "--point");
      const AdResult r = autodiff(g, point);
      std::printf("%s\n", (ad_json ? render_json(g, r) : render_text(g, r)).c_str());
      return 0;
    }
    if (*ttrain) {
      tc.device = parse_device(tr_device);
      tc.shuffle = !no_shuffle;
      tc.eval = !no_eval;
      tc.plot = !tr_no_plot;
      tc.progress = !tr_quiet;
      run_transfer_train(tc);
      return 0;
    }
    if (*teval) {
      te.device = parse_device(te_device);
      run_transfer_eval(te);
      return 0;
    }
    if (*conv) {
      HG_REQUIRE(!convert_out.empty(), "convert: the output file name is empty");
      check_output_file(convert_out, "convert:");
      write_safetensors(convert_out, read_state_dict(convert_in));
      std::printf("wrote %s\n", convert_out.c_str());
      return 0;
    }
    if (*mlp) {
      mc.plot = !no_plot;
      return cmd_mlp(mc, mlp_device, mlp_lr);
    }
    if (*rep) {
      ro.device = parse_device(report_device);
      std::stringstream ss(only);
      for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty()) ro.only.push_back(item);
      return run_report(ro);
    }
  } catch (const UserError& e) {
    std::fprintf(stderr, "handgrad: error: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const std::filesystem::filesystem_error& e) {
    // A path handgrad was given that the file system refuses (a folder where a file should be, no
    // permission): bad input, named.
    std::fprintf(stderr, "handgrad: error: %s\n", one_line(e.what()).c_str());
    return 2;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "handgrad: error: out of memory (the input asks for more than this machine has)\n");
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "handgrad: internal error: %s\n", one_line(e.what()).c_str());
    return 1;
  }
  return 0;
}
