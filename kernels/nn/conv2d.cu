// Convolutions through cuDNN, channels-last as the CPU twins (conv2d.h): activations NHWC, the
// filter in cuDNN's NHWC filter format (KRSC), which conv2d_nhwc_pack_weights writes from the
// state dict's KCRS and which the backward-filter gradient is turned back from. Per shape, a
// plan: descriptors and, for each direction, cuDNN's ranked algorithms (its heuristics, or timed
// with --cudnn-find), deterministic ones first, the first of them run with the math type it was
// ranked with; a line on stderr says when none is deterministic, and an algorithm cuDNN refuses
// when it first runs it gives way to the next. All plans
// share one workspace, sized for the largest, so a new batch size (the last partial batch, the
// eval batch, a grid's other batch size) adds descriptors, not another workspace. A training
// step then does no allocation and no search.
#include <cudnn.h>

#include <cstdio>
#include <map>
#include <memory>
#include <tuple>
#include <vector>

#include "kernels/common.cuh"
#include "kernels/einsum/strided_copy.h"
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
ConvAlgoSearch g_search = ConvAlgoSearch::Heuristic;

cudnnHandle_t cudnn_handle() {
  static const cudnnHandle_t h = [] {
    cudnnHandle_t x = nullptr;
    CUDNN_CHECK(cudnnCreate(&x));
    return x;
  }();
  CUDNN_CHECK(cudnnSetStream(h, stream()));
  return h;
}

// The one workspace of every plan: grows to the largest need, never shrinks. A block it grows
// out of is kept, not freed: a captured CUDA graph (ResNet18::train_step_graphed) may still
// point at it. Growth happens a handful of times per process.
DeviceBuffer& shared_workspace(size_t need) {
  static DeviceBuffer ws;
  static std::vector<DeviceBuffer> retired;
  if (ws.bytes() < need) {
    retired.push_back(std::move(ws));
    ws = DeviceBuffer(need);
  }
  return ws;
}

// One algorithm cuDNN ranked for a direction, with what it was ranked with.
struct Candidate {
  int algo = 0;
  cudnnMathType_t math = CUDNN_FMA_MATH;
  size_t workspace = 0;
  float ms = -1;  // the measured time, with --cudnn-find
  bool deterministic = true;
};

// cuDNN's ranked choices (fastest first: predicted by the heuristics, or measured) that are
// supported and fit the workspace bound: the deterministic ones first (handgrad's runs repeat bit
// for bit; some backward-filter algorithms add with atomics), then the others.
template <typename Perf>
std::vector<Candidate> rank(const Perf* perf, int n, bool timed, const char* what) {
  std::vector<Candidate> out;
  for (bool deterministic : {true, false})
    for (int i = 0; i < n; ++i)
      if (perf[i].status == CUDNN_STATUS_SUCCESS && perf[i].memory <= kMaxWorkspace &&
          (perf[i].determinism == CUDNN_DETERMINISTIC) == deterministic)
        out.push_back({int(perf[i].algo), perf[i].mathType, perf[i].memory, timed ? perf[i].time : -1.f, deterministic});
  if (out.empty()) throw InternalError(cat("cuDNN offers no ", what, " convolution algorithm under 256 MiB of workspace"));
  return out;
}

// One direction of a plan: its own convolution descriptor (the math type belongs to the
// algorithm: a TF32 tensor-op algorithm run with FMA math is refused or runs another kernel),
// and the ranked algorithms, of which `chosen` runs.
struct Direction {
  const char* name = "";
  cudnnConvolutionDescriptor_t conv = nullptr;
  std::vector<Candidate> ranked;
  size_t chosen = 0;
  const Candidate& algo() const { return ranked[chosen]; }
};
struct ConvPlan {
  Conv2dShape shape;
  bool tf32;
  ConvAlgoSearch search;
  cudnnTensorDescriptor_t x = nullptr, y = nullptr;
  cudnnFilterDescriptor_t w = nullptr;
  Direction fwd, bwd_data, bwd_filter;

  ConvPlan(const Conv2dShape& s, bool tf, ConvAlgoSearch how) : shape(s), tf32(tf), search(how) {
    cudnnHandle_t h = cudnn_handle();
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&x));
    CUDNN_CHECK(cudnnCreateTensorDescriptor(&y));
    CUDNN_CHECK(cudnnCreateFilterDescriptor(&w));
    for (Direction* d : {&fwd, &bwd_data, &bwd_filter}) CUDNN_CHECK(cudnnCreateConvolutionDescriptor(&d->conv));
    fwd.name = "forward", bwd_data.name = "backward data", bwd_filter.name = "backward filter";
    // With one input channel (the stem) NHWC and NCHW are the same bytes, for x and for the
    // filter (KRSC = KCRS): described as NCHW, cuDNN may offer more algorithms (the NHWC-filter
    // menu is short, and may hold no deterministic backward-filter algorithm). That description
    // mixes formats (y stays NHWC), so it is kept only when it ranks and gives a deterministic
    // backward filter; else the all-NHWC description, as for every other layer.
    bool ranked = false;
    if (s.C == 1) {
      try {
        rank_all(h, CUDNN_TENSOR_NCHW);
        ranked = bwd_filter.ranked.front().deterministic;
      } catch (const InternalError&) {
      }
    }
    if (!ranked) rank_all(h, CUDNN_TENSOR_NHWC);
    // One workspace growth for the plan (each growth retires a block a graph may still use).
    shared_workspace(std::max({fwd.ranked[0].workspace, bwd_data.ranked[0].workspace, bwd_filter.ranked[0].workspace, size_t(16)}));
    for (Direction* d : {&fwd, &bwd_data, &bwd_filter}) settle(*d, 0);
  }

  // Describes x and the filter in `in_format` (y is NHWC) and ranks every direction's algorithms.
  void rank_all(cudnnHandle_t h, cudnnTensorFormat_t in_format) {
    const Conv2dShape& s = shape;
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(x, in_format, CUDNN_DATA_FLOAT, int(s.N), int(s.C), int(s.H), int(s.W)));
    CUDNN_CHECK(cudnnSetTensor4dDescriptor(y, CUDNN_TENSOR_NHWC, CUDNN_DATA_FLOAT, int(s.N), int(s.K), int(s.OH()), int(s.OW())));
    CUDNN_CHECK(cudnnSetFilter4dDescriptor(w, CUDNN_DATA_FLOAT, in_format, int(s.K), int(s.C), int(s.R), int(s.S)));
    for (Direction* d : {&fwd, &bwd_data, &bwd_filter}) {
      CUDNN_CHECK(cudnnSetConvolution2dDescriptor(d->conv, int(s.pad), int(s.pad), int(s.stride), int(s.stride), 1, 1,
                                                  CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
      // What the search may consider: FP32 FMA math only, or (--tf32) TF32 tensor cores too, as PyTorch.
      CUDNN_CHECK(cudnnSetConvolutionMathType(d->conv, tf32 ? CUDNN_DEFAULT_MATH : CUDNN_FMA_MATH));
    }
    const bool timed = search == ConvAlgoSearch::Timed;
    {
      cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
      int n = 0;
      if (timed) CUDNN_CHECK(cudnnFindConvolutionForwardAlgorithm(h, x, w, fwd.conv, y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
      else CUDNN_CHECK(cudnnGetConvolutionForwardAlgorithm_v7(h, x, w, fwd.conv, y, CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
      fwd.ranked = rank(perf, n, timed, fwd.name);
    }
    {
      cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
      int n = 0;
      if (timed) CUDNN_CHECK(cudnnFindConvolutionBackwardDataAlgorithm(h, w, y, bwd_data.conv, x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
      else CUDNN_CHECK(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, w, y, bwd_data.conv, x, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
      bwd_data.ranked = rank(perf, n, timed, bwd_data.name);
    }
    {
      cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
      int n = 0;
      if (timed) CUDNN_CHECK(cudnnFindConvolutionBackwardFilterAlgorithm(h, x, y, bwd_filter.conv, w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
      else CUDNN_CHECK(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, x, y, bwd_filter.conv, w, CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
      bwd_filter.ranked = rank(perf, n, timed, bwd_filter.name);
    }
  }
  ~ConvPlan() {
    cudnnDestroyTensorDescriptor(x);
    cudnnDestroyTensorDescriptor(y);
    cudnnDestroyFilterDescriptor(w);
    for (Direction* d : {&fwd, &bwd_data, &bwd_filter}) cudnnDestroyConvolutionDescriptor(d->conv);
  }
  ConvPlan(const ConvPlan&) = delete;
  ConvPlan& operator=(const ConvPlan&) = delete;

  // Direction d runs its ranked algorithm i from now on, with the math type it was ranked with,
  // in a workspace large enough (a plan is made, and an algorithm refused, outside any capture).
  void settle(Direction& d, size_t i) {
    d.chosen = i;
    const Candidate& c = d.algo();
    CUDNN_CHECK(cudnnSetConvolutionMathType(d.conv, c.math));
    shared_workspace(std::max(c.workspace, size_t(16)));
    if (!c.deterministic)
      std::fprintf(stderr, "handgrad: cuDNN has no deterministic %s algorithm for %s: algo %d, whose results may differ between runs\n",
                   d.name, describe().c_str(), c.algo);
  }

  // Runs `call(algo)` on direction d; if cuDNN refuses the algorithm when it first runs it
  // (NOT_SUPPORTED, which its ranking did not foresee), the next ranked one takes its place.
  template <typename F>
  void run(Direction& d, F call) {
    for (;;) {
      const cudnnStatus_t st = call(d.algo().algo);
      if (st != CUDNN_STATUS_NOT_SUPPORTED || d.chosen + 1 >= d.ranked.size()) {
        if (st != CUDNN_STATUS_SUCCESS)
          throw InternalError(cat("cuDNN error ", cudnnGetErrorString(st), " in the ", d.name, " convolution ",
                                  describe(), " (algo ", d.algo().algo, ")"));
        return;
      }
      std::fprintf(stderr, "handgrad: cuDNN refused %s algo %d for %s; taking its next ranked choice\n", d.name,
                   d.algo().algo, describe().c_str());
      settle(d, d.chosen + 1);
    }
  }

  std::string describe() const {
    return cat("conv N", shape.N, " C", shape.C, " ", shape.H, "x", shape.W, " -> K", shape.K, " ", shape.R, "x",
               shape.S, "/", shape.stride);
  }
};

// Keyed by the search mode too: a plan chosen by the heuristics must not stand in for a timed one.
using PlanKey = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool,
                           ConvAlgoSearch>;
std::map<PlanKey, std::unique_ptr<ConvPlan>>& plans() {
  static std::map<PlanKey, std::unique_ptr<ConvPlan>> cache;
  return cache;
}

ConvPlan& plan_for(const Conv2dShape& s, bool tf32) {
  const PlanKey k{s.N, s.C, s.H, s.W, s.K, s.R, s.S, s.stride, s.pad, tf32, g_search};
  auto it = plans().find(k);
  if (it == plans().end()) it = plans().emplace(k, std::make_unique<ConvPlan>(s, tf32, g_search)).first;
  return *it->second;
}

DeviceBuffer& cudnn_workspace() { return shared_workspace(0); }

const char* math_name(cudnnMathType_t m) {
  return m == CUDNN_FMA_MATH ? "fma" : m == CUDNN_TENSOR_OP_MATH ? "tensor-op" : m == CUDNN_DEFAULT_MATH ? "default" : "tensor-op-conversion";
}

}  // namespace

void set_conv_algo_search(ConvAlgoSearch search) { g_search = search; }

int64_t conv_plans_made(ConvAlgoSearch search) {
  int64_t n = 0;
  for (const auto& entry : plans()) n += entry.second->search == search;
  return n;
}

std::vector<std::string> conv_plans_chosen() {
  std::vector<std::string> lines;
  for (const auto& [key, p] : plans()) {
    const Conv2dShape& s = p->shape;
    auto dir = [](const char* name, const Direction& d) {
      const Candidate& c = d.algo();
      return cat(name, " algo ", c.algo, " (", math_name(c.math), ", ", c.workspace >> 10, " KiB",
                 c.ms >= 0 ? cat(", ", c.ms, " ms") : std::string(), c.deterministic ? "" : ", NOT deterministic", ")");
    };
    lines.push_back(cat("conv N", s.N, " C", s.C, " ", s.H, "x", s.W, " -> K", s.K, " ", s.R, "x", s.S, "/", s.stride,
                        p->tf32 ? " tf32" : "", p->search == ConvAlgoSearch::Timed ? " timed: " : ": ", dir("fwd", p->fwd), ", ", dir("bwd-data", p->bwd_data), ", ",
                        dir("bwd-filter", p->bwd_filter)));
  }
  lines.push_back(cat("shared cuDNN workspace: ", cudnn_workspace().bytes() >> 10, " KiB for ", plans().size(), " plans"));
  return lines;
}

int64_t conv2d_nhwc_packed_floats(const Conv2dShape& s) { return s.K * s.C * s.R * s.S; }
int64_t conv2d_nhwc_workspace_floats(const Conv2dShape& s) { return s.K * s.C * s.R * s.S; }

// KCRS (the state dict's) -> KRSC (cuDNN's NHWC filter format).
void conv2d_nhwc_pack_weights(float* packed, const float* w, const Conv2dShape& s) {
  strided_copy(packed, w, make_strided_view<1>({s.K, s.R, s.S, s.C}, {Shape{s.C * s.R * s.S, s.S, 1, s.R * s.S}}));
}

void conv2d_forward_nhwc(float* y, const float* x, const float*, const float* packed, const Conv2dShape& s, float*,
                         bool tf32) {
  ConvPlan& p = plan_for(s, tf32);
  const float one = 1.f, zero = 0.f;
  p.run(p.fwd, [&](int algo) {
    DeviceBuffer& ws = cudnn_workspace();
    return cudnnConvolutionForward(cudnn_handle(), &one, p.x, x, p.w, packed, p.fwd.conv, cudnnConvolutionFwdAlgo_t(algo),
                                   ws.get(), ws.bytes(), &zero, p.y, y);
  });
}

void conv2d_backward_data_nhwc(float* dx, const float* dy, const float*, const float* packed, const Conv2dShape& s,
                               float*, bool tf32) {
  ConvPlan& p = plan_for(s, tf32);
  const float one = 1.f, zero = 0.f;
  p.run(p.bwd_data, [&](int algo) {
    DeviceBuffer& ws = cudnn_workspace();
    return cudnnConvolutionBackwardData(cudnn_handle(), &one, p.w, packed, p.y, dy, p.bwd_data.conv,
                                        cudnnConvolutionBwdDataAlgo_t(algo), ws.get(), ws.bytes(), &zero, p.x, dx);
  });
}

// The gradient in KRSC into `workspace`, then back to the state dict's KCRS in dw.
void conv2d_backward_filter_nhwc(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* workspace,
                                 bool tf32) {
  ConvPlan& p = plan_for(s, tf32);
  const float one = 1.f, zero = 0.f;
  p.run(p.bwd_filter, [&](int algo) {
    DeviceBuffer& ws = cudnn_workspace();
    return cudnnConvolutionBackwardFilter(cudnn_handle(), &one, p.x, x, p.y, dy, p.bwd_filter.conv,
                                          cudnnConvolutionBwdFilterAlgo_t(algo), ws.get(), ws.bytes(), &zero, p.w,
                                          workspace);
  });
  strided_copy(dw, workspace, make_strided_view<1>({s.K, s.C, s.R, s.S}, {Shape{s.R * s.S * s.C, 1, s.S * s.C, s.C}}));
}

}  // namespace handgrad::cuda
