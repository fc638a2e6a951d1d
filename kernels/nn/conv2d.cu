// Convolutions through cuDNN: descriptors built per shape, the algorithm for each direction
// chosen once (cuDNN's heuristics: the first that succeeds with a workspace under 256 MiB) and
// cached with its workspace, so a training step does no allocation and no search.
#include <cudnn.h>

#include <map>
#include <memory>
#include <tuple>

#include "host/tensor.h"
#include "kernels/common.cuh"
#include "kernels/nn/conv2d.h"

#define CUDNN_CHECK(expr)                                                                        \
  do {                                                                                           \
    cudnnStatus_t hg_st_ = (expr);                                                               \
    if (hg_st_ != CUDNN_STATUS_SUCCESS)                                                          \
      throw ::handgrad::InternalError(::handgrad::cat(__FILE__, ":", __LINE__, ": cuDNN error ", \
                                                      cudnnGetErrorString(hg_st_), " in ", #expr)); \
  } while (0)

namespace handgrad::cuda {

namespace {

constexpr size_t kMaxWorkspace = size_t(256) << 20;

cudnnHandle_t cudnn_handle() {
  static const cudnnHandle_t h = [] {
    cudnnHandle_t x = nullptr;
    CUDNN_CHECK(cudnnCreate(&x));
    return x;
  }();
  CUDNN_CHECK(cudnnSetStream(h, stream()));
  return h;
}

// Everything cuDNN needs for one convolution shape: descriptors, the three algorithms and
// one workspace large enough for all of them.
struct ConvPlan {
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  cudnnConvolutionDescriptor_t conv = nullptr;
  cudnnConvolutionFwdAlgo_t fwd{};
  cudnnConvolutionBwdDataAlgo_t bwd_data{};
  cudnnConvolutionBwdFilterAlgo_t bwd_filter{};
  Buffer workspace;

  ConvPlan(const Conv2dShape& s, bool tf32) {
    cudnnHandle_t h = cudnn_handle();
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&conv));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(s.N), int(s.C), int(s.H), int(s.W)));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, int(s.N), int(s.K), int(s.OH()), int(s.OW())));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, int(s.K), int(s.C), int(s.R), int(s.S)));
    CUDNN_CHECK(cudnnSetConvolution2dDescriptor(conv, int(s.pad), int(s.pad), int(s.stride), int(s.stride), 1, 1,
                                                CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    // FP32: FMA math only (no TF32 tensor cores); --tf32: cuDNN may use them, as PyTorch does.
    CUDNN_CHECK(cudnnSetConvolutionMathType(conv, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    size_t need = 0;
    {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int n = 0;
      CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, conv, y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
      fwd = pick(perf, n, need, "forward");
    }
    {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int n = 0;
      CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, y, conv, x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
      bwd_data = pick(perf, n, need, "backward data");
    }
    {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int n = 0;
      CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, y, conv, w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
      bwd_filter = pick(perf, n, need, "backward filter");
    }
    workspace = Buffer(std::max<size_t>(need, 16), Device::CUDA);
  }
  ~ConvPlan() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyFilterDescriptor(w);
    cudnnDestroyConvolutionDescriptor(conv);
  }
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;

  // The heuristics' best algorithm that is supported and fits the workspace bound.
  template <typename Perf>
  static decltype(Perf{}.algo) pick(const Perf* perf, int n, size_t& need, const char* what) {
    for (int i = 0; i < n; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kMaxWorkspace) {
        need = std::max(need, perf[i].memory);
        return perf[i].algo;
      }
    throw InternalError(cat("cuDNN offers no ", what, " convolution algorithm under 256 MiB of workspace"));
  }
};

ConvPlan& plan_for(const Conv2dShape& s, bool tf32) {
  using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool>;
  static std::map<Key, std::unique_ptr<ConvPlan>> cache;
  const Key k{s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.stride, s.pad, tf32};
  auto it = cache.find(k);
  if (it == cache.end()) it = cache.emplace(k, std::make_unique<ConvPlan>(s, tf32)).first;
  return *it->second;
}

}  // namespace

void conv2d_forward(float* y, const float* x, const float* w, const Conv2dShape& s, bool tf32) {
  ConvPlan& p = plan_for(s, tf32);
  const float one = 1.f, zero = 0.f;
  CUDNN_CHECK(cudnnConvolutionForward(cudnn_handle(), &one, p.x, x, p.w, w, p.conv, p.fwd, p.workspace.get(),
                                      p.workspace.bytes(), &zero, p.y, y));
}

void conv2d_backward_data(float* dx, const float* dy, const float* w, const Conv2dShape& s, bool tf32) {
  ConvPlan& p = plan_for(s, tf32);
  const float one = 1.f, zero = 0.f;
  CUDNN_CHECK(cudnnConvolutionBackwardData(cudnn_handle(), &one, p.w, w, p.y, dy, p.conv, p.bwd_data,
                                           p.workspace.get(), p.workspace.bytes(), &zero, p.x, dx));
}

void conv2d_backward_filter(float* dw, const float* dy, const float* x, const Conv2dShape& s, bool tf32) {
  ConvPlan& p = plan_for(s, tf32);
  const float one = 1.f, zero = 0.f;
  CUDNN_CHECK(cudnnConvolutionBackwardFilter(cudnn_handle(), &one, p.x, x, p.y, dy, p.conv, p.bwd_filter,
                                             p.workspace.get(), p.workspace.bytes(), &zero, p.w, dw));
}

}  // namespace handgrad::cuda
