// handgrad: the command line. Each subcommand parses its flags into a config, runs, and maps
// errors to exit codes: 0 ok, 1 a check failed or an internal error, 2 bad input (one line on
// stderr, always).
#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdio>
#include <sstream>

#include "host/device.h"
#include "host/einsum.h"
#include "host/npy.h"
#include "host/report.h"

using namespace handgrad;

namespace {

int cmd_info(const std::string& device_flag) {
  const SystemInfo s = system_info();
  std::printf("handgrad %s (commit %s)\n", HANDGRAD_VERSION, build_commit());
  std::printf("CPU: %d OpenMP threads, GEMM: %s\n", s.cpu_threads, s.cpu_gemm.c_str());
  if (!s.built_with_cuda) {
    std::printf("CUDA: not built (CPU-only build)\n");
  } else {
    auto ver = [](int v) { return cat(v / 1000, ".", (v % 1000) / 10); };
    std::printf("CUDA runtime %s, driver %s, cuBLAS %d.%d.%d, cuDNN %s\n",
                ver(s.cuda_runtime_version).c_str(),
                s.cuda_driver_version ? ver(s.cuda_driver_version).c_str() : "none",
                s.cublas_version / 10000, (s.cublas_version / 100) % 100, s.cublas_version % 100,
                s.cudnn_version.empty() ? "not found" : s.cudnn_version.c_str());
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
  bool plan = false;
};

int cmd_einsum(const EinsumArgs& a) {
  const Device dev = parse_device(a.device);
  std::vector<Tensor> host, dev_tensors;
  for (const std::string& path : a.inputs) host.push_back(read_npy_f32(path));
  std::vector<const Tensor*> args;
  for (Tensor& t : host) {
    dev_tensors.push_back(t.to(dev));
  }
  for (Tensor& t : dev_tensors) args.push_back(&t);
  EinsumPlanLog log;
  const auto t0 = std::chrono::steady_clock::now();
  Tensor out = einsum(a.equation, args, &log);
  synchronize(dev);
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  write_npy(a.output, out);
  if (a.plan)
    for (const std::string& s : log.steps) std::printf("  plan: %s\n", s.c_str());
  std::printf("%s -> %s %s on %s in %.3f ms (first call, includes setup)\n", a.equation.c_str(),
              a.output.c_str(), shape_str(out.shape()).c_str(), device_name(dev), ms);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"handgrad: the COMP4901Y HW1 exercises on handwritten CUDA kernels (CPU twin included)"};
  app.require_subcommand(1);
  app.set_version_flag("--version", std::string(HANDGRAD_VERSION) + " (" + build_commit() + ")");

  std::string info_device = "auto";
  CLI::App* info = app.add_subcommand("info", "Devices, library versions, and the backend --device auto picks");
  info->add_option("--device", info_device, "auto|cpu|cuda")->capture_default_str();

  EinsumArgs ea;
  CLI::App* ein = app.add_subcommand("einsum", "Einstein summation on .npy files (torch.einsum semantics)");
  ein->add_option("equation", ea.equation, "e.g. \"abcd,ed->abce\"")->required();
  ein->add_option("inputs", ea.inputs, "input .npy files (float32 or float64)")->required();
  ein->add_option("-o,--output", ea.output, "output .npy (float32)")->required();
  ein->add_option("--device", ea.device, "auto|cpu|cuda")->capture_default_str();
  ein->add_flag("--plan", ea.plan, "print how the equation was lowered onto kernels (ellipsis dims print as digits)");

  ReportOptions ro;
  std::string report_device = "auto", only;
  CLI::App* rep = app.add_subcommand("report", "Run the homework's exercises and write results/");
  rep->add_option("--out-dir", ro.out_dir, "output folder")->capture_default_str();
  rep->add_option("--device", report_device, "auto|cpu|cuda")->capture_default_str();
  rep->add_option("--seed", ro.seed, "seed of every random draw")->capture_default_str();
  rep->add_flag("--quick", ro.quick, "small sizes: finishes in minutes on a 2-core CPU");
  rep->add_option("--only", only, "comma-separated subset, e.g. q1");

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "handgrad: error: %s (see --help)\n", e.what());
    return 2;
  }

  try {
    if (*info) return cmd_info(info_device);
    if (*ein) return cmd_einsum(ea);
    if (*rep) {
      ro.device = parse_device(report_device);
      std::stringstream ss(only);
      for (std::string item; std::getline(ss, item, ',');)
        if (!item.empty()) ro.only.push_back(item);
      return run_report(ro);
    }
  } catch (const UserError& e) {
    std::fprintf(stderr, "handgrad: error: %s\n", e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "handgrad: internal error: %s\n", e.what());
    return 1;
  }
  return 0;
}
