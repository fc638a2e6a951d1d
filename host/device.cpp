#include "host/device.h"

#include <omp.h>

#include <algorithm>
#include <mutex>
#include <thread>
#if defined(__x86_64__) || defined(__i386__)
#include <xmmintrin.h>
#endif

#include "kernels/error.h"
#include "kernels/einsum/gemm.h"
#ifdef HANDGRAD_WITH_CUDA
#include "kernels/cuda_check.h"
#endif

namespace handgrad {

const char* device_name(Device d) { return d == Device::CUDA ? "cuda" : "cpu"; }

bool built_with_cuda() {
#ifdef HANDGRAD_WITH_CUDA
  return true;
#else
  return false;
#endif
}

namespace {
struct Probe {
  bool ok = false;
  std::string reason;
};

const Probe& probe() {
  static Probe p;
  static std::once_flag once;
  std::call_once(once, [] {
#ifdef HANDGRAD_WITH_CUDA
    int n = 0;
    cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      p.reason = cudaGetErrorString(err);
      cudaGetLastError();  // clear the sticky error so later calls are not confused
    } else if (n == 0) {
      p.reason = "the driver reports 0 devices";
    } else {
      p.ok = open_cuda_libraries(&p.reason);
    }
#else
    p.reason = "this handgrad was built without CUDA (CPU-only build)";
#endif
  });
  return p;
}
}  // namespace

bool cuda_available() { return probe().ok; }

bool cuda_kernels_run() {
#ifdef HANDGRAD_SIMT
  return true;
#else
  return cuda_available();
#endif
}
std::string cuda_unavailable_reason() { return probe().reason; }

Device parse_device(const std::string& flag) {
  if (flag == "cpu") return Device::CPU;
  if (flag == "auto") return cuda_available() ? Device::CUDA : Device::CPU;
  if (flag == "cuda" || flag == "gpu") {
    HG_REQUIRE(cuda_available(), "--device cuda requested, but there is no usable GPU: ",
               cuda_unavailable_reason());
    return Device::CUDA;
  }
  throw UserError(cat("--device must be auto, cpu or cuda, got '", flag, "'"));
}

void check_thread_count() {
  const int64_t cores = std::max<int64_t>(1, std::thread::hardware_concurrency());
  const int64_t wanted = omp_get_max_threads(), most = 64 * cores;
  HG_REQUIRE(wanted <= most, "OMP_NUM_THREADS asks for ", wanted, " threads; this machine has ", cores,
             " cores, and more than ", most, " threads (64 per core) is not a setting handgrad runs with");
}

void flush_denormals_to_zero() {
#if defined(__x86_64__) || defined(__i386__)
  auto set = [] { _mm_setcsr(_mm_getcsr() | 0x8040); };  // bit 15: FTZ, bit 6: DAZ
  set();
#pragma omp parallel
  set();
#endif
}

SystemInfo system_info() {
  SystemInfo s;
  s.built_with_cuda = built_with_cuda();
  s.unavailable_reason = cuda_unavailable_reason();
  s.cpu_threads = omp_get_max_threads();
  s.cpu_gemm = cpu::gemm_backend();
#ifdef HANDGRAD_WITH_CUDA
  cudaRuntimeGetVersion(&s.cuda_runtime_version);
  if (cudaDriverGetVersion(&s.cuda_driver_version) != cudaSuccess) s.cuda_driver_version = 0;
  s.cuda_libraries = find_cuda_libraries();
  if (cuda_available()) {
    int n = 0;
    CUDA_CHECK(cudaGetDeviceCount(&n));
    for (int i = 0; i < n; ++i) {
      cudaDeviceProp prop{};
      CUDA_CHECK(cudaGetDeviceProperties(&prop, i));
      s.gpus.push_back({i, prop.name, prop.major, prop.minor, prop.totalGlobalMem,
                        prop.multiProcessorCount});
    }
  }
#endif
  return s;
}

}  // namespace handgrad
