// The SIMT emulator's device side: what a kernel source sees when a SIMT build
// (HANDGRAD_SIMT=ON) compiles kernels/**/*.cu as C++ instead of with nvcc. The build force-includes
// this header into each .cu, so the kernels are the very same files; only their launches go
// through one macro (HG_LAUNCH, kernels/common.cuh) that both compilers read.
//
// A launch runs every block of the grid, one after another, on the calling CPU thread; the threads
// of a block are fibers (kernels/simt/simt.cpp) that switch only at __syncthreads and at warp
// shuffles. Every load and store of the kernel code is instrumented (the .cu files are compiled
// with -fsanitize=thread, whose hooks simt.cpp defines itself: no ThreadSanitizer runtime), which
// is how the emulator checks, per access, what compute-sanitizer checks on a GPU.
#pragma once
#ifndef HANDGRAD_SIMT
#error "kernels/simt/simt.h is for SIMT builds only (HANDGRAD_SIMT=ON)"
#endif

#include <cuda_runtime.h>  // the toolkit's types (dim3, float4, cudaStream_t) and API prototypes

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <tuple>
#include <type_traits>
#include <utility>

// CUDA's qualifiers, as the host compiler must read them. A __shared__ variable is a function-local
// static: one copy, which every block uses in turn (blocks run one at a time), exactly what a
// block's shared memory is. Each is put in a section of their own, where the runtime finds them
// by their symbols (their extents are checked): an index past one can land on another __shared__
// array, never on the host's statics.
#undef __global__
#undef __device__
#undef __host__
#undef __shared__
#undef __launch_bounds__
#undef __grid_constant__
#define __global__
#define __device__
#define __host__
#define __shared__ static __attribute__((section("hg_simt_shared")))
#define __launch_bounds__(...)
#define __grid_constant__
// Code that branches on __CUDA_ARCH__ for its device form (kernels/philox.h) takes that form here
// too, so that the emulator runs it (__CUDA_ARCH__ itself would change the toolkit's headers).
#define HG_SIMT_DEVICE_CODE 1

namespace handgrad::simt {

// The CUDA thread a fiber is running.
struct ThreadCtx {
  uint3 thread_idx, block_idx;
  dim3 block_dim, grid_dim;
  int linear;  // threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)
};
// What threadIdx & co. read: functions of the (uninstrumented) runtime, so that reading them is
// no memory access of the kernel's.
uint3 thread_idx();
uint3 block_idx();
dim3 block_dim();
dim3 grid_dim();
int lane_id();

// Waits at a block-wide barrier; `site` names the __syncthreads (file:line) for reports.
void syncthreads(const char* site);
// A warp shuffle: every lane of `mask` contributes `bits` and receives what lane `src_lane` gave.
uint64_t warp_exchange(unsigned mask, uint64_t bits, int src_lane, const char* site);
// The launch's dynamic shared memory (extern __shared__).
void* dynamic_shared();

struct LaunchConfig {
  dim3 grid, block;
  size_t dynamic_smem;
  cudaStream_t stream;
  const void* kernel;  // for cudaFuncSetAttribute's limits
  const char* name;    // "sgemm_kernel<128, 128, 16, 8, 8, false, false>"
  const char* site;    // the launch's file:line
};
// Runs a whole grid: `run_thread(params)` is one CUDA thread. `params` (the kernel's arguments,
// params_bytes long) may be read by every thread, as a GPU's parameter space is. A bad launch or a
// violation inside the kernel is left for cudaGetLastError, as on a GPU.
void launch(const LaunchConfig& cfg, void (*run_thread)(const void* params), const void* params,
            size_t params_bytes);

template <class F>
struct KernelParams;
template <class... P>
struct KernelParams<void (*)(P...)> {
  using Tuple = std::tuple<std::decay_t<P>...>;
};

// The kernel's name from this template's signature: GCC spells the argument out in full.
// "[with auto Kernel = handgrad::cuda::{anonymous}::sgemm_kernel<...>]" -> "sgemm_kernel<...>".
const char* kernel_name_from(const char* pretty_function);
template <auto Kernel>
const char* kernel_name() {
  static const char* const name = kernel_name_from(__PRETTY_FUNCTION__);
  return name;
}

// HG_LAUNCH(grid, block, smem, stream, kernel)(args...) in a SIMT build.
template <auto Kernel>
struct Launcher {
  LaunchConfig cfg;
  template <class... A>
  void operator()(A&&... args) const {
    using Tuple = typename KernelParams<decltype(Kernel)>::Tuple;
    const Tuple params(std::forward<A>(args)...);  // converted as the call would convert them
    launch(cfg, [](const void* p) { std::apply(Kernel, *static_cast<const Tuple*>(p)); }, &params,
           sizeof(params));
  }
};
template <auto Kernel>
Launcher<Kernel> launcher(dim3 grid, dim3 block, size_t smem, cudaStream_t stream, const char* site) {
  return {{grid, block, smem, stream, reinterpret_cast<const void*>(Kernel), kernel_name<Kernel>(), site}};
}

}  // namespace handgrad::simt

#define HG_SIMT_STR2_(x) #x
#define HG_SIMT_STR_(x) HG_SIMT_STR2_(x)
#define HG_SIMT_SITE __FILE__ ":" HG_SIMT_STR_(__LINE__)

#define threadIdx (::handgrad::simt::thread_idx())
#define blockIdx (::handgrad::simt::block_idx())
#define blockDim (::handgrad::simt::block_dim())
#define gridDim (::handgrad::simt::grid_dim())
#define __syncthreads() ::handgrad::simt::syncthreads(HG_SIMT_SITE)

// The intrinsics the kernels use, with the rounding they promise (the .cu files are compiled with
// -ffp-contract=off, so a*b+c is two roundings, as __fmul_rn/__fadd_rn ask).
template <class T>
inline T __ldg(const T* p) { return *p; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
  return static_cast<unsigned long long>((static_cast<unsigned __int128>(a) * b) >> 64);
}
inline float __int_as_float(int i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}
inline int __float_as_int(float f) {
  int i;
  std::memcpy(&i, &f, sizeof i);
  return i;
}

// CUDA's min/max take mixed integer types (converted as arithmetic would convert them).
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> min(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(b) < C(a) ? C(b) : C(a);
}
template <class A, class B, class = std::enable_if_t<std::is_arithmetic_v<A> && std::is_arithmetic_v<B>>>
inline std::common_type_t<A, B> max(A a, B b) {
  using C = std::common_type_t<A, B>;
  return C(a) < C(b) ? C(b) : C(a);
}

// __shfl_xor_sync: lane ^ lane_mask; with `width` < 32, a lane may read from an earlier segment of
// `width` lanes but gets its own value back when its partner lies in a later one (CUDA's rule).
template <class T>
inline T __shfl_xor_sync(unsigned mask, T value, int lane_mask, int width = 32) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffles move up to 8 bytes");
  const int lane = ::handgrad::simt::lane_id();
  int src = lane ^ lane_mask;
  if (src / width > lane / width) src = lane;
  uint64_t bits = 0;
  std::memcpy(&bits, &value, sizeof value);
  bits = ::handgrad::simt::warp_exchange(mask, bits, src, "__shfl_xor_sync");
  std::memcpy(&value, &bits, sizeof value);
  return value;
}

// The toolkit's typed overload (nvcc-only in cuda_runtime.h): a kernel's address as the key.
template <class T>
inline cudaError_t cudaFuncSetAttribute(T* kernel, cudaFuncAttribute attr, int value) {
  return ::cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), attr, value);
}
