// Channels-last convolutions on the CPU: oneDNN when the build has it, else the NCHW im2col twin
// between transposes (conv2d.h states the contract).
#include <algorithm>

#include "kernels/error.h"
#include "kernels/einsum/gemm.h"
#include "kernels/einsum/strided_copy.h"
#include "kernels/nn/conv2d.h"

#ifdef HANDGRAD_WITH_ONEDNN
#include <map>
#include <memory>
#include <mutex>
#include <oneapi/dnnl/dnnl.hpp>
#include <tuple>
#endif

namespace handgrad::cpu {

namespace {

int64_t round_up16(int64_t n) { return (n + 15) / 16 * 16; }  // keeps what follows 64-byte aligned

}  // namespace

// Both are permutes: the einsum family's strided copy, over the output's [N, HW, C] or [N, C, HW].
void nchw_to_nhwc(float* dst, const float* src, int64_t N, int64_t C, int64_t HW) {
  strided_copy(dst, src, make_strided_view<1>({N, HW, C}, {Shape{C * HW, 1, HW}}));
}
void nhwc_to_nchw(float* dst, const float* src, int64_t N, int64_t C, int64_t HW) {
  strided_copy(dst, src, make_strided_view<1>({N, C, HW}, {Shape{HW * C, 1, C}}));
}

#ifdef HANDGRAD_WITH_ONEDNN

namespace {

using dnnl::memory;
using Tag = memory::format_tag;

dnnl::engine& engine() {
  static dnnl::engine e(dnnl::engine::kind::cpu, 0);
  return e;
}
dnnl::stream& stream() {
  static dnnl::stream s(engine());
  return s;
}

// The three primitives of one shape (N included), with the user-managed scratchpad they need.
struct Plan {
  dnnl::convolution_forward fwd;
  dnnl::convolution_backward_data bwd_data;
  dnnl::convolution_backward_weights bwd_filter;
  memory::desc src, dst, w_fwd, w_bwd_data, dw;  // activations NHWC; weights as oneDNN chose
  memory::desc w_plain;                          // [K, C, R, S]
  memory::desc scratch_fwd, scratch_bwd_data, scratch_bwd_filter;
  int64_t scratch_floats = 0;                    // the largest of the three scratchpads
};

using Key = std::tuple<int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t>;
Key key_of(const Conv2dShape& s, int64_t N) { return {N, s.C, s.H, s.W, s.K, s.R, s.S, s.stride, s.pad}; }

// The weights' blocked layouts are fixed per geometry by the first batch size planned (the
// model's full batch), so weights packed once serve every batch size; a later plan for a
// partial batch asks for the same layouts.
struct WeightLayouts {
  memory::desc fwd, bwd_data;
};

// At most kMaxPlans plans are kept (each holds three primitives and their JIT code): a process
// that meets ever new image sizes (handgrad.ResNet18's forward) would otherwise grow without end.
// When full they are all dropped; a caller keeps the plan it uses alive. The weight layouts stay:
// weights packed for a geometry must keep matching its later plans.
constexpr size_t kMaxPlans = 128;  // a ResNet18 run needs about 80: 20 shapes, full and last batch, train and evaluate
std::mutex plans_mutex;
std::map<Key, std::shared_ptr<const Plan>> plans;
std::map<Key, WeightLayouts> layouts;  // keyed with N = 0

std::shared_ptr<const Plan> plan_for(const Conv2dShape& s) {
  std::lock_guard<std::mutex> lock(plans_mutex);
  const Key key = key_of(s, s.N);
  auto it = plans.find(key);
  if (it != plans.end()) return it->second;
  HG_REQUIRE(s.N > 0 && s.C > 0 && s.K > 0 && s.OH() > 0 && s.OW() > 0, "conv2d: empty shape");

  const memory::dims src{s.N, s.C, s.H, s.W}, wei{s.K, s.C, s.R, s.S}, dst{s.N, s.K, s.OH(), s.OW()};
  const memory::dims strides{s.stride, s.stride}, pad{s.pad, s.pad};
  const auto f32 = memory::data_type::f32;
  Plan p;
  p.src = memory::desc(src, f32, Tag::nhwc);
  p.dst = memory::desc(dst, f32, Tag::nhwc);
  p.w_plain = memory::desc(wei, f32, Tag::oihw);
  const memory::desc any(wei, f32, Tag::any);
  const auto known = layouts.find(key_of(s, 0));
  dnnl::primitive_attr attr;
  attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
  const auto algo = dnnl::algorithm::convolution_direct;

  const dnnl::convolution_forward::primitive_desc fwd(
      {dnnl::prop_kind::forward_training, algo, p.src, known != layouts.end() ? known->second.fwd : any, p.dst,
       strides, pad, pad},
      attr, engine());
  const dnnl::convolution_backward_data::primitive_desc bwd_data(
      {algo, p.src, known != layouts.end() ? known->second.bwd_data : any, p.dst, strides, pad, pad}, attr, engine(),
      fwd);
  const dnnl::convolution_backward_weights::primitive_desc bwd_filter({algo, p.src, any, p.dst, strides, pad, pad},
                                                                      attr, engine(), fwd);
  p.w_fwd = fwd.weights_desc();
  p.w_bwd_data = bwd_data.weights_desc();
  p.dw = bwd_filter.diff_weights_desc();
  if (known == layouts.end()) layouts[key_of(s, 0)] = {p.w_fwd, p.w_bwd_data};
  p.scratch_fwd = fwd.scratchpad_desc();
  p.scratch_bwd_data = bwd_data.scratchpad_desc();
  p.scratch_bwd_filter = bwd_filter.scratchpad_desc();
  size_t scratch = 0;
  for (const memory::desc& d : {p.scratch_fwd, p.scratch_bwd_data, p.scratch_bwd_filter})
    scratch = std::max(scratch, d.get_size());
  p.scratch_floats = round_up16(static_cast<int64_t>((scratch + sizeof(float) - 1) / sizeof(float)));
  p.fwd = dnnl::convolution_forward(fwd);
  p.bwd_data = dnnl::convolution_backward_data(bwd_data);
  p.bwd_filter = dnnl::convolution_backward_weights(bwd_filter);
  if (plans.size() >= kMaxPlans) plans.clear();
  return plans.emplace(key, std::make_shared<const Plan>(std::move(p))).first->second;
}

int64_t floats_of(const memory::desc& d) { return static_cast<int64_t>(d.get_size() / sizeof(float)); }

memory wrap(const memory::desc& d, const void* p) { return memory(d, engine(), const_cast<void*>(p)); }

// Where the backward-data weights sit inside `packed` (after the forward ones, unless the same).
int64_t bwd_data_offset(const Plan& p) { return p.w_bwd_data == p.w_fwd ? 0 : round_up16(floats_of(p.w_fwd)); }

}  // namespace

int64_t conv2d_nhwc_plans_kept() {
  std::lock_guard<std::mutex> lock(plans_mutex);
  return static_cast<int64_t>(plans.size());
}

std::string conv2d_nhwc_backend() {
  const dnnl_version_t* v = dnnl_version();
  return "oneDNN " + std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch);
}

int64_t conv2d_nhwc_workspace_floats(const Conv2dShape& s) {
  const auto plan = plan_for(s);
  const Plan& p = *plan;
  return p.scratch_floats + (p.dw == p.w_plain ? 0 : floats_of(p.dw));
}

int64_t conv2d_nhwc_packed_floats(const Conv2dShape& s) {
  const auto plan = plan_for(s);
  const Plan& p = *plan;
  return bwd_data_offset(p) + floats_of(p.w_bwd_data);
}

void conv2d_nhwc_pack_weights(float* packed, const float* w, const Conv2dShape& s) {
  const auto plan = plan_for(s);
  const Plan& p = *plan;
  memory plain = wrap(p.w_plain, w);
  memory fwd = wrap(p.w_fwd, packed);
  dnnl::reorder(plain, fwd).execute(stream(), plain, fwd);
  if (bwd_data_offset(p) != 0) {
    memory bwd = wrap(p.w_bwd_data, packed + bwd_data_offset(p));
    dnnl::reorder(plain, bwd).execute(stream(), plain, bwd);
  }
  stream().wait();
}

void conv2d_forward_nhwc(float* y, const float* x, const float*, const float* packed, const Conv2dShape& s,
                         float* ws) {
  const auto plan = plan_for(s);
  const Plan& p = *plan;
  p.fwd.execute(stream(), {{DNNL_ARG_SRC, wrap(p.src, x)},
                           {DNNL_ARG_WEIGHTS, wrap(p.w_fwd, packed)},
                           {DNNL_ARG_DST, wrap(p.dst, y)},
                           {DNNL_ARG_SCRATCHPAD, wrap(p.scratch_fwd, ws)}});
  stream().wait();
}

void conv2d_backward_data_nhwc(float* dx, const float* dy, const float*, const float* packed, const Conv2dShape& s,
                               float* ws) {
  const auto plan = plan_for(s);
  const Plan& p = *plan;
  p.bwd_data.execute(stream(),
                     {{DNNL_ARG_DIFF_DST, wrap(p.dst, dy)},
                      {DNNL_ARG_WEIGHTS, wrap(p.w_bwd_data, packed + bwd_data_offset(p))},
                      {DNNL_ARG_DIFF_SRC, wrap(p.src, dx)},
                      {DNNL_ARG_SCRATCHPAD, wrap(p.scratch_bwd_data, ws)}});
  stream().wait();
}

void conv2d_backward_filter_nhwc(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* ws) {
  const auto plan = plan_for(s);
  const Plan& p = *plan;
  const bool direct = p.dw == p.w_plain;
  memory blocked = wrap(p.dw, direct ? dw : ws + p.scratch_floats);
  p.bwd_filter.execute(stream(),
                       {{DNNL_ARG_SRC, wrap(p.src, x)},
                        {DNNL_ARG_DIFF_DST, wrap(p.dst, dy)},
                        {DNNL_ARG_DIFF_WEIGHTS, blocked},
                        {DNNL_ARG_SCRATCHPAD, wrap(p.scratch_bwd_filter, ws)}});
  if (!direct) {
    memory plain = wrap(p.w_plain, dw);
    dnnl::reorder(blocked, plain).execute(stream(), blocked, plain);
  }
  stream().wait();
}

#else  // no oneDNN: the NCHW twin between transposes

namespace {
int64_t in_floats(const Conv2dShape& s) { return round_up16(s.N * s.C * s.H * s.W); }
int64_t out_floats(const Conv2dShape& s) { return round_up16(s.N * s.K * s.OH() * s.OW()); }
}  // namespace

int64_t conv2d_nhwc_plans_kept() { return 0; }
std::string conv2d_nhwc_backend() { return "im2col + GEMM (built without oneDNN)"; }
int64_t conv2d_nhwc_workspace_floats(const Conv2dShape& s) {
  return in_floats(s) + out_floats(s) + conv2d_workspace_floats(s);
}
int64_t conv2d_nhwc_packed_floats(const Conv2dShape&) { return 0; }
void conv2d_nhwc_pack_weights(float*, const float*, const Conv2dShape&) {}

void conv2d_forward_nhwc(float* y, const float* x, const float* w, const float*, const Conv2dShape& s, float* ws) {
  float* xt = ws;
  float* yt = ws + in_floats(s);
  nhwc_to_nchw(xt, x, s.N, s.C, s.H * s.W);
  conv2d_forward(yt, xt, w, s, yt + out_floats(s));
  nchw_to_nhwc(y, yt, s.N, s.K, s.OH() * s.OW());
}

void conv2d_backward_data_nhwc(float* dx, const float* dy, const float* w, const float*, const Conv2dShape& s,
                               float* ws) {
  float* dxt = ws;
  float* dyt = ws + in_floats(s);
  nhwc_to_nchw(dyt, dy, s.N, s.K, s.OH() * s.OW());
  conv2d_backward_data(dxt, dyt, w, s, dyt + out_floats(s));
  nchw_to_nhwc(dx, dxt, s.N, s.C, s.H * s.W);
}

void conv2d_backward_filter_nhwc(float* dw, const float* dy, const float* x, const Conv2dShape& s, float* ws) {
  float* xt = ws;
  float* dyt = ws + in_floats(s);
  nhwc_to_nchw(xt, x, s.N, s.C, s.H * s.W);
  nhwc_to_nchw(dyt, dy, s.N, s.K, s.OH() * s.OW());
  conv2d_backward_filter(dw, dyt, xt, s, dyt + out_floats(s));
}

#endif

}  // namespace handgrad::cpu
