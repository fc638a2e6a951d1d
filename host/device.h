// Devices: what exists on this machine and which backend a run uses.
#pragma once
#include <string>
#include <vector>

#include "kernels/cuda_libs.h"

namespace handgrad {

enum class Device { CPU, CUDA };

const char* device_name(Device d);

// "auto" -> CUDA when a usable GPU is present, else CPU; "cpu"; "cuda" (a UserError when no
// usable GPU exists). Anything else is a UserError.
Device parse_device(const std::string& flag);

// True when this binary was built with the CUDA backend.
bool built_with_cuda();

// True when the CUDA backend is built AND a driver, at least one GPU, cuBLAS and cuDNN are usable
// (once a GPU is found, the libraries are opened to know: kernels/cuda_libs.h).
// Never throws; the first call probes once and caches the answer.
bool cuda_available();

// Why cuda_available() is false, in one line ("" when it is true).
std::string cuda_unavailable_reason();

// True when handgrad's own CUDA kernels can run here: on a usable GPU, or, in a SIMT build
// (HANDGRAD_SIMT), on the emulator, which runs them on the CPU for tests. There cuBLAS, cuDNN and
// CUDA graphs cannot run, so cuda_available() stays false and --device auto means the CPU.
bool cuda_kernels_run();

struct GpuInfo {
  int index = 0;
  std::string name;
  int cc_major = 0, cc_minor = 0;
  size_t total_mem = 0;
  int sm_count = 0;
};

struct SystemInfo {
  bool built_with_cuda = false;
  int cuda_runtime_version = 0;  // e.g. 13000
  int cuda_driver_version = 0;   // 0 when no driver
  std::vector<CudaLibrary> cuda_libraries;  // cuBLAS, cuDNN: where they are (opened at the first GPU use)
  std::vector<GpuInfo> gpus;
  std::string unavailable_reason;
  int cpu_threads = 0;
  std::string cpu_gemm;          // cpu::gemm_backend()
};

SystemInfo system_info();

// Throws UserError when OpenMP is asked for more threads than 64 per core of this machine
// (OMP_NUM_THREADS=100000: libgomp crashes starting them). Call before the first parallel region.
void check_thread_count();

// Flush denormal floats to zero on the CPU (FTZ and DAZ, on this thread and every OpenMP
// worker). Training runs where gradients shrink into the denormal range otherwise slow down
// several times on x86; values below 1.2e-38 carry no information for SGD.
void flush_denormals_to_zero();

// The git commit this binary was built from ("abc123def456", "+dirty" when the tree had
// uncommitted changes, "unknown" outside a checkout).
const char* build_commit();

}  // namespace handgrad
