// The CUDA runtime API, as much of it as handgrad calls, for a SIMT build: the toolkit's own
// prototypes (cuda_runtime_api.h), defined over the emulator. There is one device, shaped like an
// H100 (132 SMs, 48 KB of shared memory per block, 232,448 B opted in). Work is done when the call
// returns (every stream is synchronous); events time nothing; graphs cannot be captured (handgrad
// falls back to eager steps, as it does where a capture fails on a GPU).
#include <chrono>
#include <cstring>

#include "kernels/simt/simt_runtime.h"

namespace {
namespace simt = handgrad::simt;

constexpr size_t kEmulatedMemory = size_t(8) << 30;  // what cudaMemGetInfo reports as the total

struct ErrorName {
  cudaError_t code;
  const char* name;
  const char* text;
};
constexpr ErrorName kErrors[] = {
    {cudaSuccess, "cudaSuccess", "no error"},
    {cudaErrorInvalidValue, "cudaErrorInvalidValue", "invalid argument"},
    {cudaErrorMemoryAllocation, "cudaErrorMemoryAllocation", "out of memory"},
    {cudaErrorInvalidConfiguration, "cudaErrorInvalidConfiguration", "invalid configuration argument"},
    {cudaErrorInvalidDevicePointer, "cudaErrorInvalidDevicePointer", "invalid device pointer"},
    {cudaErrorInvalidMemcpyDirection, "cudaErrorInvalidMemcpyDirection", "invalid copy direction for memcpy"},
    {cudaErrorIllegalAddress, "cudaErrorIllegalAddress", "an illegal memory access was encountered (SIMT emulator)"},
    {cudaErrorMisalignedAddress, "cudaErrorMisalignedAddress", "misaligned address (SIMT emulator)"},
    {cudaErrorLaunchFailure, "cudaErrorLaunchFailure", "unspecified launch failure (SIMT emulator: see its report above)"},
    {cudaErrorNotSupported, "cudaErrorNotSupported", "operation not supported (by the SIMT emulator)"},
    {cudaErrorInvalidDevice, "cudaErrorInvalidDevice", "invalid device ordinal"},
    {cudaErrorInvalidResourceHandle, "cudaErrorInvalidResourceHandle", "invalid resource handle"},
};
const ErrorName* find_error(cudaError_t e) {
  for (const ErrorName& n : kErrors)
    if (n.code == e) return &n;
  return nullptr;
}

// [p, p + bytes) lies in one live device allocation.
bool device_range(const void* p, size_t bytes) { return bytes == 0 || simt::device_bytes_from(p) >= bytes; }

cudaError_t copy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) {
  if (bytes == 0) return cudaSuccess;
  const bool dst_dev = simt::device_bytes_from(dst) > 0, src_dev = simt::device_bytes_from(src) > 0;
  switch (kind) {
    case cudaMemcpyHostToHost: break;
    case cudaMemcpyHostToDevice:
      if (!device_range(dst, bytes)) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDeviceToHost:
      if (!device_range(src, bytes)) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDeviceToDevice:
      if (!device_range(dst, bytes) || !device_range(src, bytes)) return cudaErrorInvalidValue;
      break;
    case cudaMemcpyDefault:
      if ((dst_dev && !device_range(dst, bytes)) || (src_dev && !device_range(src, bytes))) return cudaErrorInvalidValue;
      break;
    default: return cudaErrorInvalidMemcpyDirection;
  }
  std::memmove(dst, src, bytes);
  return cudaSuccess;
}

struct Event {
  std::chrono::steady_clock::time_point at;
};
}  // namespace

extern "C" {

cudaError_t cudaMalloc(void** p, size_t bytes) {
  if (!p) return cudaErrorInvalidValue;
  *p = simt::device_alloc(bytes);
  return *p ? cudaSuccess : cudaErrorMemoryAllocation;
}
cudaError_t cudaFree(void* p) {
  if (!p) return cudaSuccess;
  return simt::device_free(p) ? cudaSuccess : cudaErrorInvalidDevicePointer;
}
cudaError_t cudaMemcpy(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind) { return copy(dst, src, bytes, kind); }
cudaError_t cudaMemcpyAsync(void* dst, const void* src, size_t bytes, cudaMemcpyKind kind, cudaStream_t) {
  return copy(dst, src, bytes, kind);
}
cudaError_t cudaMemset(void* p, int value, size_t bytes) {
  if (!device_range(p, bytes)) return cudaErrorInvalidValue;
  if (bytes) std::memset(p, value, bytes);
  return cudaSuccess;
}
cudaError_t cudaMemsetAsync(void* p, int value, size_t bytes, cudaStream_t) { return cudaMemset(p, value, bytes); }
cudaError_t cudaMemGetInfo(size_t* free_bytes, size_t* total) {
  const size_t used = simt::device_bytes_in_use();
  if (total) *total = kEmulatedMemory;
  if (free_bytes) *free_bytes = used < kEmulatedMemory ? kEmulatedMemory - used : 0;
  return cudaSuccess;
}

cudaError_t cudaGetLastError() { return simt::take_last_error(true); }
cudaError_t cudaPeekAtLastError() { return simt::take_last_error(false); }
const char* cudaGetErrorName(cudaError_t e) {
  const ErrorName* n = find_error(e);
  return n ? n->name : "cudaErrorUnknown";
}
const char* cudaGetErrorString(cudaError_t e) {
  const ErrorName* n = find_error(e);
  return n ? n->text : "unknown error (SIMT emulator)";
}

cudaError_t cudaGetDeviceCount(int* n) {
  *n = 1;
  return cudaSuccess;
}
cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
cudaError_t cudaSetDevice(int d) { return d == 0 ? cudaSuccess : cudaErrorInvalidDevice; }
cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr attr, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  switch (attr) {
    case cudaDevAttrMultiProcessorCount: *v = simt::kMultiprocessors; break;
    case cudaDevAttrMaxSharedMemoryPerBlockOptin: *v = simt::kSharedPerBlockOptin; break;
    case cudaDevAttrMaxSharedMemoryPerBlock: *v = int(simt::kSharedPerBlock); break;
    case cudaDevAttrMaxThreadsPerBlock: *v = int(simt::kMaxThreadsPerBlock); break;
    case cudaDevAttrWarpSize: *v = 32; break;
    case cudaDevAttrComputeCapabilityMajor: *v = 9; break;
    case cudaDevAttrComputeCapabilityMinor: *v = 0; break;
    default: return cudaErrorNotSupported;
  }
  return cudaSuccess;
}
cudaError_t cudaGetDeviceProperties(cudaDeviceProp* prop, int device) {
  if (device != 0) return cudaErrorInvalidDevice;
  *prop = cudaDeviceProp{};
  std::strncpy(prop->name, "handgrad SIMT emulator (H100-shaped)", sizeof prop->name - 1);
  prop->major = 9;
  prop->minor = 0;
  prop->totalGlobalMem = kEmulatedMemory;
  prop->multiProcessorCount = simt::kMultiprocessors;
  prop->sharedMemPerBlock = simt::kSharedPerBlock;
  prop->sharedMemPerBlockOptin = simt::kSharedPerBlockOptin;
  prop->maxThreadsPerBlock = int(simt::kMaxThreadsPerBlock);
  prop->warpSize = 32;
  return cudaSuccess;
}
cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = CUDART_VERSION;
  return cudaSuccess;
}
cudaError_t cudaDriverGetVersion(int* v) {
  *v = 0;  // no driver: the emulator is not one
  return cudaErrorNotSupported;
}
cudaError_t cudaFuncSetAttribute(const void* kernel, cudaFuncAttribute attr, int value) {
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorNotSupported;
  if (value < 0 || value > simt::kSharedPerBlockOptin) return cudaErrorInvalidValue;
  simt::set_max_dynamic_smem(kernel, value);
  return cudaSuccess;
}

cudaError_t cudaDeviceSynchronize() { return cudaSuccess; }
cudaError_t cudaStreamSynchronize(cudaStream_t) { return cudaSuccess; }
cudaError_t cudaStreamCreate(cudaStream_t* s) {
  *s = reinterpret_cast<cudaStream_t>(new char);  // a distinct handle; work on it is synchronous too
  return cudaSuccess;
}
cudaError_t cudaStreamCreateWithFlags(cudaStream_t* s, unsigned int) { return cudaStreamCreate(s); }
cudaError_t cudaStreamDestroy(cudaStream_t s) {
  delete reinterpret_cast<char*>(s);
  return cudaSuccess;
}
cudaError_t cudaStreamBeginCapture(cudaStream_t, cudaStreamCaptureMode) { return cudaErrorNotSupported; }
cudaError_t cudaStreamEndCapture(cudaStream_t, cudaGraph_t* graph) {
  *graph = nullptr;
  return cudaErrorNotSupported;
}
cudaError_t cudaGraphInstantiate(cudaGraphExec_t*, cudaGraph_t, unsigned long long) { return cudaErrorNotSupported; }
cudaError_t cudaGraphLaunch(cudaGraphExec_t, cudaStream_t) { return cudaErrorNotSupported; }
cudaError_t cudaGraphDestroy(cudaGraph_t) { return cudaSuccess; }
cudaError_t cudaGraphExecDestroy(cudaGraphExec_t) { return cudaSuccess; }

cudaError_t cudaEventCreate(cudaEvent_t* e) {
  *e = reinterpret_cast<cudaEvent_t>(new Event{std::chrono::steady_clock::now()});
  return cudaSuccess;
}
cudaError_t cudaEventDestroy(cudaEvent_t e) {
  delete reinterpret_cast<Event*>(e);
  return cudaSuccess;
}
cudaError_t cudaEventRecord(cudaEvent_t e, cudaStream_t) {
  reinterpret_cast<Event*>(e)->at = std::chrono::steady_clock::now();
  return cudaSuccess;
}
cudaError_t cudaEventSynchronize(cudaEvent_t) { return cudaSuccess; }
cudaError_t cudaEventElapsedTime(float* ms, cudaEvent_t start, cudaEvent_t end) {
  *ms = std::chrono::duration<float, std::milli>(reinterpret_cast<Event*>(end)->at - reinterpret_cast<Event*>(start)->at).count();
  return cudaSuccess;
}

}  // extern "C"
