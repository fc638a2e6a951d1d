// cuBLAS and cuDNN, opened at their first call (see cuda_libs.h for why and where they are
// looked for). Compiled with -fvisibility=hidden: the forwarders below are handgrad's own, never
// exported, so a library loaded beside us (PyTorch's cuBLAS in the Python module's process) can
// never bind to them instead of to its own functions.
#include "kernels/cuda_libs.h"

#include <cublas_v2.h>
#include <cudnn.h>
#include <dlfcn.h>
#include <link.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iterator>

#include "kernels/error.h"

#define HG_STRINGIFY_(x) #x
#define HG_STRINGIFY(x) HG_STRINGIFY_(x)

namespace handgrad {

namespace {

struct LibrarySpec {
  const char* label;
  const char* soname;    // the major version this handgrad was built against
  const char* function;  // one it must have: a file of that name that lacks it is not the library
};
const LibrarySpec kCublas{"cuBLAS", "libcublas.so." HG_STRINGIFY(CUBLAS_VER_MAJOR), "cublasCreate_v2"};
const LibrarySpec kCudnn{"cuDNN", "libcudnn.so." HG_STRINGIFY(CUDNN_MAJOR), "cudnnCreate"};

// HANDGRAD_CUDA_LIBRARY_PATH when set and not empty: the only folders to look in.
const char* only_folders() {
  const char* s = std::getenv("HANDGRAD_CUDA_LIBRARY_PATH");
  return s && *s ? s : nullptr;
}

// An environment value as a message shows it: one line, at most 200 characters.
std::string shown(const char* value) {
  std::string s(value, std::min<size_t>(std::strlen(value), 200));
  for (char& c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return std::strlen(value) > 200 ? s + "..." : s;
}

std::vector<std::string> split_folders(const char* list) {
  std::vector<std::string> out;
  std::string s = list ? list : "";
  size_t start = 0;
  while (start <= s.size()) {
    const size_t end = std::min(s.find(':', start), s.size());
    if (end > start) out.push_back(s.substr(start, end - start));
    start = end + 1;
  }
  return out;
}

bool is_readable_file(const std::string& path) {
  struct stat st {};
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(path.c_str(), R_OK) == 0;
}

// The path the system's library cache (ldconfig) gives for `soname`, "" when none. The cache's
// string table holds each library's name and full path as NUL-terminated strings: the path is
// the one that starts with '/' and ends in "/<soname>".
std::string from_ld_cache(const std::string& soname) {
  struct stat st {};
  if (::stat("/etc/ld.so.cache", &st) != 0 || !S_ISREG(st.st_mode) || st.st_size > (64 << 20)) return "";
  std::ifstream f("/etc/ld.so.cache", std::ios::binary);
  const std::string cache((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const std::string tail = "/" + soname;
  for (size_t start = 0; start < cache.size();) {
    const size_t end = std::min(cache.find('\0', start), cache.size());
    const size_t n = end - start;
    if (n > tail.size() && cache[start] == '/' && cache.compare(end - tail.size(), tail.size(), tail) == 0) {
      const std::string path = cache.substr(start, n);
      if (is_readable_file(path)) return path;
    }
    start = end + 1;
  }
  return "";
}

CudaLibrary locate(const LibrarySpec& spec) {
  CudaLibrary lib;
  lib.label = spec.label;
  lib.soname = spec.soname;
  auto look_in = [&](const std::vector<std::string>& folders) {
    for (const std::string& d : folders)
      if (is_readable_file(d + "/" + spec.soname)) return d + "/" + spec.soname;
    return std::string();
  };
  // Already in the process (PyTorch's, in the Python module's process): that one, not a second copy.
  if (void* loaded = ::dlopen(spec.soname, RTLD_LAZY | RTLD_NOLOAD)) {
    link_map* map = nullptr;
    if (::dlinfo(loaded, RTLD_DI_LINKMAP, &map) == 0 && map && map->l_name) lib.path = map->l_name;
    ::dlclose(loaded);
    if (!lib.path.empty()) return lib;
  }
  if (const char* only = only_folders()) {
    lib.path = look_in(split_folders(only));
    if (lib.path.empty()) lib.why_not = cat("is not in HANDGRAD_CUDA_LIBRARY_PATH (", shown(only), ")");
    return lib;
  }
  lib.path = look_in(split_folders(std::getenv("LD_LIBRARY_PATH")));
  if (lib.path.empty()) lib.path = look_in(split_folders(HANDGRAD_CUDA_LIBRARY_DIRS));
  if (lib.path.empty()) lib.path = from_ld_cache(spec.soname);
  if (lib.path.empty())
    lib.path = look_in({"/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib",
                        "/usr/local/cuda/lib64", "/usr/local/cuda/lib"});
  if (lib.path.empty())
    lib.why_not = cat("is not in LD_LIBRARY_PATH, ", HANDGRAD_CUDA_LIBRARY_DIRS,
                      ", the system's library cache, /usr/lib or /usr/local/cuda");
  return lib;
}

// Opens the library `locate` found (dlopen: a second open returns the same handle), or says why
// not in *why_not.
void* try_open(const LibrarySpec& spec, const CudaLibrary& lib, std::string* why_not) {
  void* handle = nullptr;
#ifdef HANDGRAD_SIMT
  // The SIMT emulator runs handgrad's own kernels; the libraries' kernels exist only as GPU code.
  (void)spec, (void)lib;
  *why_not = "is not emulated (this is a SIMT build: handgrad's own kernels run on the CPU, for tests)";
  return handle;
#endif
  if (!lib.path.empty()) {
    handle = ::dlopen(lib.path.c_str(), RTLD_LAZY | RTLD_LOCAL);
    if (!handle) *why_not = cat("at ", lib.path, " does not open: ", ::dlerror());
  } else if (!only_folders()) {
    // Where the system's loader alone may know more (a glibc-hwcaps folder, say).
    handle = ::dlopen(spec.soname, RTLD_LAZY | RTLD_LOCAL);
    if (!handle) *why_not = lib.why_not;
  } else {
    *why_not = lib.why_not;
  }
  if (handle && !::dlsym(handle, spec.function)) {
    *why_not = cat("at ", lib.path.empty() ? spec.soname : lib.path, " has no ", spec.function, ": not ", spec.label);
    ::dlclose(handle);
    handle = nullptr;
  }
  return handle;
}

void* open_or_throw(const LibrarySpec& spec) {
  std::string why_not;
  void* handle = try_open(spec, locate(spec), &why_not);
  HG_REQUIRE(handle, "the GPU path needs ", spec.label, " (", spec.soname, "), which ", why_not,
             ": install it, set HANDGRAD_CUDA_LIBRARY_PATH to its folder, or use --device cpu");
  return handle;
}

// Opened at the first call of any of its functions; a failure throws, and the next call tries again.
void* cublas_library() {
  static void* const handle = open_or_throw(kCublas);
  return handle;
}
void* cudnn_library() {
  static void* const handle = open_or_throw(kCudnn);
  return handle;
}

template <class Fn>
Fn symbol(void* library, const LibrarySpec& spec, const char* name) {
  void* p = ::dlsym(library, name);
  HG_REQUIRE(p, spec.label, " (", spec.soname, ") has no ", name, ": older than the version handgrad was built against?");
  return reinterpret_cast<Fn>(p);
}

}  // namespace

bool open_cuda_libraries(std::string* why_not) {
  for (const LibrarySpec& spec : {kCublas, kCudnn}) {
    std::string why;
    if (!try_open(spec, locate(spec), &why)) {
      *why_not = cat(spec.label, " (", spec.soname, ") ", why);
      return false;
    }
  }
  return true;
}

std::vector<CudaLibrary> find_cuda_libraries() {
  CudaLibrary cublas = locate(kCublas), cudnn = locate(kCudnn);
  cublas.version = cat(CUBLAS_VER_MAJOR, ".", CUBLAS_VER_MINOR, ".", CUBLAS_VER_PATCH, " (built against)");
  if (!cudnn.path.empty()) {
    if (void* handle = try_open(kCudnn, cudnn, &cudnn.why_not)) {
      using GetVersion = size_t (*)();
      if (auto get_version = reinterpret_cast<GetVersion>(::dlsym(handle, "cudnnGetVersion"))) {
        const size_t v = get_version();  // 9.x: major*10000 + minor*100 + patch
        cudnn.version = cat(v / 10000, ".", (v / 100) % 100, ".", v % 100);
      }
    } else {
      cudnn.path.clear();
    }
  }
  return {cublas, cudnn};
}

}  // namespace handgrad

// Each function handgrad calls, with the header's prototype (a mismatch does not compile: two C
// functions cannot share a name), forwarded to the library's own.
#define HG_FORWARD(library, spec, ret, name, params, args)                                          \
  extern "C" ret name params {                                                                      \
    static const auto real = handgrad::symbol<decltype(&name)>(handgrad::library(), handgrad::spec, #name); \
    return real args;                                                                               \
  }
#define HG_CUBLAS(ret, name, params, args) HG_FORWARD(cublas_library, kCublas, ret, name, params, args)
#define HG_CUDNN(ret, name, params, args) HG_FORWARD(cudnn_library, kCudnn, ret, name, params, args)

// cuBLAS: the handle and the one GEMM the einsum path takes from it; error names.
HG_CUBLAS(cublasStatus_t, cublasCreate_v2, (cublasHandle_t* handle), (handle))
HG_CUBLAS(cublasStatus_t, cublasSetStream_v2, (cublasHandle_t handle, cudaStream_t streamId), (handle, streamId))
HG_CUBLAS(const char*, cublasGetStatusName, (cublasStatus_t status), (status))
HG_CUBLAS(const char*, cublasGetStatusString, (cublasStatus_t status), (status))
HG_CUBLAS(cublasStatus_t, cublasSgemmStridedBatched,
          (cublasHandle_t handle, cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
           const float* alpha, const float* A, int lda, long long int strideA, const float* B, int ldb,
           long long int strideB, const float* beta, float* C, int ldc, long long int strideC, int batchCount),
          (handle, transa, transb, m, n, k, alpha, A, lda, strideA, B, ldb, strideB, beta, C, ldc, strideC, batchCount))

// cuDNN: the handle, descriptors, and the three convolutions with their algorithm choice.
HG_CUDNN(const char*, cudnnGetErrorString, (cudnnStatus_t status), (status))
HG_CUDNN(cudnnStatus_t, cudnnCreate, (cudnnHandle_t* handle), (handle))
HG_CUDNN(cudnnStatus_t, cudnnSetStream, (cudnnHandle_t handle, cudaStream_t streamId), (handle, streamId))
HG_CUDNN(cudnnStatus_t, cudnnCreateTensorDescriptor, (cudnnTensorDescriptor_t* tensorDesc), (tensorDesc))
HG_CUDNN(cudnnStatus_t, cudnnDestroyTensorDescriptor, (cudnnTensorDescriptor_t tensorDesc), (tensorDesc))
HG_CUDNN(cudnnStatus_t, cudnnSetTensor4dDescriptor,
         (cudnnTensorDescriptor_t tensorDesc, cudnnTensorFormat_t format, cudnnDataType_t dataType, int n, int c,
          int h, int w),
         (tensorDesc, format, dataType, n, c, h, w))
HG_CUDNN(cudnnStatus_t, cudnnCreateFilterDescriptor, (cudnnFilterDescriptor_t* filterDesc), (filterDesc))
HG_CUDNN(cudnnStatus_t, cudnnDestroyFilterDescriptor, (cudnnFilterDescriptor_t filterDesc), (filterDesc))
HG_CUDNN(cudnnStatus_t, cudnnSetFilter4dDescriptor,
         (cudnnFilterDescriptor_t filterDesc, cudnnDataType_t dataType, cudnnTensorFormat_t format, int k, int c,
          int h, int w),
         (filterDesc, dataType, format, k, c, h, w))
HG_CUDNN(cudnnStatus_t, cudnnCreateConvolutionDescriptor, (cudnnConvolutionDescriptor_t* convDesc), (convDesc))
HG_CUDNN(cudnnStatus_t, cudnnDestroyConvolutionDescriptor, (cudnnConvolutionDescriptor_t convDesc), (convDesc))
HG_CUDNN(cudnnStatus_t, cudnnSetConvolution2dDescriptor,
         (cudnnConvolutionDescriptor_t convDesc, int pad_h, int pad_w, int u, int v, int dilation_h, int dilation_w,
          cudnnConvolutionMode_t mode, cudnnDataType_t computeType),
         (convDesc, pad_h, pad_w, u, v, dilation_h, dilation_w, mode, computeType))
HG_CUDNN(cudnnStatus_t, cudnnSetConvolutionMathType, (cudnnConvolutionDescriptor_t convDesc, cudnnMathType_t mathType),
         (convDesc, mathType))

HG_CUDNN(cudnnStatus_t, cudnnGetConvolutionForwardAlgorithm_v7,
         (cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnFilterDescriptor_t filterDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t destDesc,
          const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults),
         (handle, srcDesc, filterDesc, convDesc, destDesc, requestedAlgoCount, returnedAlgoCount, perfResults))
HG_CUDNN(cudnnStatus_t, cudnnFindConvolutionForwardAlgorithm,
         (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,
          const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionFwdAlgoPerf_t* perfResults),
         (handle, xDesc, wDesc, convDesc, yDesc, requestedAlgoCount, returnedAlgoCount, perfResults))
HG_CUDNN(cudnnStatus_t, cudnnGetConvolutionForwardWorkspaceSize,
         (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnFilterDescriptor_t wDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t yDesc,
          cudnnConvolutionFwdAlgo_t algo, size_t* sizeInBytes),
         (handle, xDesc, wDesc, convDesc, yDesc, algo, sizeInBytes))
HG_CUDNN(cudnnStatus_t, cudnnConvolutionForward,
         (cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc, const void* x,
          const cudnnFilterDescriptor_t wDesc, const void* w, const cudnnConvolutionDescriptor_t convDesc,
          cudnnConvolutionFwdAlgo_t algo, void* workSpace, size_t workSpaceSizeInBytes, const void* beta,
          const cudnnTensorDescriptor_t yDesc, void* y),
         (handle, alpha, xDesc, x, wDesc, w, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, yDesc, y))

HG_CUDNN(cudnnStatus_t, cudnnGetConvolutionBackwardDataAlgorithm_v7,
         (cudnnHandle_t handle, const cudnnFilterDescriptor_t filterDesc, const cudnnTensorDescriptor_t diffDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t gradDesc,
          const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perfResults),
         (handle, filterDesc, diffDesc, convDesc, gradDesc, requestedAlgoCount, returnedAlgoCount, perfResults))
HG_CUDNN(cudnnStatus_t, cudnnFindConvolutionBackwardDataAlgorithm,
         (cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,
          const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdDataAlgoPerf_t* perfResults),
         (handle, wDesc, dyDesc, convDesc, dxDesc, requestedAlgoCount, returnedAlgoCount, perfResults))
HG_CUDNN(cudnnStatus_t, cudnnGetConvolutionBackwardDataWorkspaceSize,
         (cudnnHandle_t handle, const cudnnFilterDescriptor_t wDesc, const cudnnTensorDescriptor_t dyDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnTensorDescriptor_t dxDesc,
          cudnnConvolutionBwdDataAlgo_t algo, size_t* sizeInBytes),
         (handle, wDesc, dyDesc, convDesc, dxDesc, algo, sizeInBytes))
HG_CUDNN(cudnnStatus_t, cudnnConvolutionBackwardData,
         (cudnnHandle_t handle, const void* alpha, const cudnnFilterDescriptor_t wDesc, const void* w,
          const cudnnTensorDescriptor_t dyDesc, const void* dy, const cudnnConvolutionDescriptor_t convDesc,
          cudnnConvolutionBwdDataAlgo_t algo, void* workSpace, size_t workSpaceSizeInBytes, const void* beta,
          const cudnnTensorDescriptor_t dxDesc, void* dx),
         (handle, alpha, wDesc, w, dyDesc, dy, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, dxDesc, dx))

HG_CUDNN(cudnnStatus_t, cudnnGetConvolutionBackwardFilterAlgorithm_v7,
         (cudnnHandle_t handle, const cudnnTensorDescriptor_t srcDesc, const cudnnTensorDescriptor_t diffDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,
          const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t* perfResults),
         (handle, srcDesc, diffDesc, convDesc, gradDesc, requestedAlgoCount, returnedAlgoCount, perfResults))
HG_CUDNN(cudnnStatus_t, cudnnFindConvolutionBackwardFilterAlgorithm,
         (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t dwDesc,
          const int requestedAlgoCount, int* returnedAlgoCount, cudnnConvolutionBwdFilterAlgoPerf_t* perfResults),
         (handle, xDesc, dyDesc, convDesc, dwDesc, requestedAlgoCount, returnedAlgoCount, perfResults))
HG_CUDNN(cudnnStatus_t, cudnnGetConvolutionBackwardFilterWorkspaceSize,
         (cudnnHandle_t handle, const cudnnTensorDescriptor_t xDesc, const cudnnTensorDescriptor_t dyDesc,
          const cudnnConvolutionDescriptor_t convDesc, const cudnnFilterDescriptor_t gradDesc,
          cudnnConvolutionBwdFilterAlgo_t algo, size_t* sizeInBytes),
         (handle, xDesc, dyDesc, convDesc, gradDesc, algo, sizeInBytes))
HG_CUDNN(cudnnStatus_t, cudnnConvolutionBackwardFilter,
         (cudnnHandle_t handle, const void* alpha, const cudnnTensorDescriptor_t xDesc, const void* x,
          const cudnnTensorDescriptor_t dyDesc, const void* dy, const cudnnConvolutionDescriptor_t convDesc,
          cudnnConvolutionBwdFilterAlgo_t algo, void* workSpace, size_t workSpaceSizeInBytes, const void* beta,
          const cudnnFilterDescriptor_t dwDesc, void* dw),
         (handle, alpha, xDesc, x, dyDesc, dy, convDesc, algo, workSpace, workSpaceSizeInBytes, beta, dwDesc, dw))
