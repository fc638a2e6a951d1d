#include "models/resnet18.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "host/philox.h"
#include "kernels/einsum/gemm.h"
#include "kernels/nn/batchnorm.h"
#include "kernels/nn/conv2d.h"
#include "kernels/nn/pooling.h"
#include "kernels/nn/relu.h"
#include "kernels/nn/xent.h"
#include "kernels/optim/sgd.h"

namespace handgrad {

namespace {

// One entry of the state dict: a parameter (in `params`), a running statistic (in `buffers`)
// or a BN step counter (num_batches_tracked, in `counters`).
struct Entry {
  enum Kind { Param, Buffer, Counter } kind;
  std::string name;
  Shape shape;
  int64_t offset;  // into params / buffers / counters
  int64_t numel() const { return shape_numel(shape); }
};

// conv -> BN, with the activations the backward pass needs.
struct ConvBN {
  std::string conv_name, bn_name;
  Conv2dShape conv;
  int64_t w = 0, gamma = 0, beta = 0, running_mean = 0, running_var = 0, counter = 0;
  std::vector<float> conv_out, bn_out, save_mean, save_invstd;
  const float* input = nullptr;
};

struct Block {
  ConvBN c1, c2, down;
  bool has_down = false;
  std::vector<float> mid, out;  // relu(bn1(conv1(x))), relu(bn2(conv2(mid)) + identity)
  const float* input = nullptr;
};

}  // namespace

struct ResNet18::Impl {
  int64_t batch, H, W, Cin, classes, n = 0;
  std::vector<Entry> entries;
  std::vector<float> params, grads, velocity, buffers;
  std::vector<int64_t> counters;
  std::vector<bool> trainable;  // per Param entry index in `entries`
  std::string freeze = "none";

  ConvBN stem;
  std::vector<float> stem_relu, pool_out;
  std::vector<int32_t> pool_argmax;
  Pool2dShape pool;
  Block blocks[8];
  int64_t fc_w = 0, fc_b = 0, features = 512;
  std::vector<float> feat, logits, dlogits, workspace;
  std::vector<int32_t> labels;
  std::vector<float> g[6];  // backward scratch, each as large as the largest activation
  bool have_forward = false;

  int64_t add(Entry::Kind kind, const std::string& name, const Shape& shape) {
    int64_t& end = kind == Entry::Param ? param_end : kind == Entry::Buffer ? buffer_end : counter_end;
    entries.push_back({kind, name, shape, end});
    end += shape_numel(shape);
    return entries.back().offset;
  }
  int64_t param_end = 0, buffer_end = 0, counter_end = 0;

  ConvBN make_convbn(const std::string& conv_name, const std::string& bn_name, int64_t C, int64_t K,
                     int64_t R, int64_t stride, int64_t pad, int64_t h, int64_t w) {
    ConvBN u;
    u.conv_name = conv_name;
    u.bn_name = bn_name;
    u.conv = {batch, C, h, w, K, R, R, stride, pad};
    u.w = add(Entry::Param, conv_name + ".weight", {K, C, R, R});
    u.gamma = add(Entry::Param, bn_name + ".weight", {K});
    u.beta = add(Entry::Param, bn_name + ".bias", {K});
    u.running_mean = add(Entry::Buffer, bn_name + ".running_mean", {K});
    u.running_var = add(Entry::Buffer, bn_name + ".running_var", {K});
    u.counter = add(Entry::Counter, bn_name + ".num_batches_tracked", {});
    const int64_t out = batch * K * u.conv.OH() * u.conv.OW();
    u.conv_out.resize(out);
    u.bn_out.resize(out);
    u.save_mean.resize(K);
    u.save_invstd.resize(K);
    return u;
  }

  Impl(int64_t b, int64_t h, int64_t w, int64_t cin, int64_t k) : batch(b), H(h), W(w), Cin(cin), classes(k) {
    HG_REQUIRE(b > 0 && h > 0 && w > 0 && cin > 0 && k > 0, "ResNet18: sizes must be positive");
    stem = make_convbn("conv1", "bn1", cin, 64, 7, 2, 3, h, w);
    int64_t sh = stem.conv.OH(), sw = stem.conv.OW();
    stem_relu.resize(stem.bn_out.size());
    pool = {batch, 64, sh, sw, 3, 2, 1};
    pool_out.resize(batch * 64 * pool.OH() * pool.OW());
    pool_argmax.resize(pool_out.size());
    sh = pool.OH(), sw = pool.OW();
    int64_t C = 64, idx = 0;
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t K = 64 << stage;
      for (int j = 0; j < 2; ++j, ++idx) {
        const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(j) + ".";
        const int64_t stride = (stage > 0 && j == 0) ? 2 : 1;
        Block& bl = blocks[idx];
        bl.c1 = make_convbn(p + "conv1", p + "bn1", C, K, 3, stride, 1, sh, sw);
        const int64_t oh = bl.c1.conv.OH(), ow = bl.c1.conv.OW();
        bl.c2 = make_convbn(p + "conv2", p + "bn2", K, K, 3, 1, 1, oh, ow);
        bl.has_down = stride != 1 || C != K;
        if (bl.has_down) bl.down = make_convbn(p + "downsample.0", p + "downsample.1", C, K, 1, stride, 0, sh, sw);
        bl.mid.resize(bl.c1.bn_out.size());
        bl.out.resize(bl.c2.bn_out.size());
        C = K, sh = oh, sw = ow;
      }
    }
    fc_w = add(Entry::Param, "fc.weight", {classes, features});
    fc_b = add(Entry::Param, "fc.bias", {classes});
    params.assign(param_end, 0.f);
    grads.assign(param_end, 0.f);
    velocity.assign(param_end, 0.f);
    buffers.assign(buffer_end, 0.f);
    counters.assign(counter_end, 0);
    feat.resize(batch * features);
    logits.resize(batch * classes);
    dlogits.resize(batch * classes);
    labels.resize(batch);
    int64_t ws = 0, act = stem.conv_out.size();
    auto need = [&](const ConvBN& u) {
      ws = std::max(ws, cpu::conv2d_workspace_floats(u.conv));
      act = std::max<int64_t>(act, u.conv_out.size());
    };
    need(stem);
    for (const Block& bl : blocks) {
      need(bl.c1);
      need(bl.c2);
      if (bl.has_down) need(bl.down);
    }
    act = std::max<int64_t>(act, pool_out.size());
    workspace.resize(ws);
    for (auto& v : g) v.resize(act);
    trainable.assign(entries.size(), true);
  }

  const Entry* find(const std::string& name) const {
    for (const Entry& e : entries)
      if (e.name == name) return &e;
    return nullptr;
  }
  bool is_trainable(int64_t param_offset) const {
    for (size_t i = 0; i < entries.size(); ++i)
      if (entries[i].kind == Entry::Param && entries[i].offset == param_offset) return trainable[i];
    return false;
  }

  // ---------------------------------------------------------------------------------------
  void convbn_forward(ConvBN& u, const float* x, bool train) {
    u.input = x;
    u.conv.N = n;
    cpu::conv2d_forward(u.conv_out.data(), x, &params[u.w], u.conv, workspace.data());
    const BatchNormShape bs{n, u.conv.K, u.conv.OH() * u.conv.OW()};
    if (train) {
      cpu::batchnorm_forward_train(u.bn_out.data(), u.conv_out.data(), &params[u.gamma], &params[u.beta],
                                   &buffers[u.running_mean], &buffers[u.running_var], u.save_mean.data(),
                                   u.save_invstd.data(), bs);
      ++counters[u.counter];
    } else {
      cpu::batchnorm_forward_eval(u.bn_out.data(), u.conv_out.data(), &params[u.gamma], &params[u.beta],
                                  &buffers[u.running_mean], &buffers[u.running_var], bs);
    }
  }

  // dy (w.r.t. bn_out) -> weight grads (if trainable) and, when dx is not null, the input grad.
  void convbn_backward(ConvBN& u, const float* dy, float* dconv, float* dx) {
    const BatchNormShape bs{n, u.conv.K, u.conv.OH() * u.conv.OW()};
    const bool bn_train = is_trainable(u.gamma);
    cpu::batchnorm_backward(dconv, bn_train ? &grads[u.gamma] : nullptr, bn_train ? &grads[u.beta] : nullptr, dy,
                            u.conv_out.data(), &params[u.gamma], u.save_mean.data(), u.save_invstd.data(), bs);
    if (is_trainable(u.w)) cpu::conv2d_backward_filter(&grads[u.w], dconv, u.input, u.conv, workspace.data());
    if (dx) cpu::conv2d_backward_data(dx, dconv, &params[u.w], u.conv, workspace.data());
  }

  double forward(const float* images, const int32_t* lab, int64_t count, bool train, int64_t* correct) {
    HG_REQUIRE(count > 0 && count <= batch, "ResNet18: ", count, " images for a network sized for ", batch);
    n = count;
    std::copy_n(lab, n, labels.begin());
    convbn_forward(stem, images, train);
    const int64_t stem_n = n * 64 * stem.conv.OH() * stem.conv.OW();
    cpu::relu_forward(stem_relu.data(), stem.bn_out.data(), stem_n);
    pool.N = n;
    cpu::maxpool2d_forward(pool_out.data(), pool_argmax.data(), stem_relu.data(), pool);
    const float* cur = pool_out.data();
    for (Block& bl : blocks) {
      bl.input = cur;
      const int64_t mid_n = n * bl.c1.conv.K * bl.c1.conv.OH() * bl.c1.conv.OW();
      convbn_forward(bl.c1, cur, train);
      cpu::relu_forward(bl.mid.data(), bl.c1.bn_out.data(), mid_n);
      convbn_forward(bl.c2, bl.mid.data(), train);
      const float* identity = cur;
      if (bl.has_down) {
        convbn_forward(bl.down, cur, train);
        identity = bl.down.bn_out.data();
      }
      const float* a = bl.c2.bn_out.data();
      float* out = bl.out.data();
#pragma omp parallel for simd schedule(static)
      for (int64_t i = 0; i < mid_n; ++i) out[i] = std::max(a[i] + identity[i], 0.f);
      cur = out;
    }
    const Block& last = blocks[7];
    cpu::global_avgpool_forward(feat.data(), cur, n * features, last.c2.conv.OH() * last.c2.conv.OW());
    // logits = feat fc.weight^T + fc.bias
    GemmShape gs;
    gs.M = n, gs.N = classes, gs.K = features, gs.trans_b = true, gs.lda = features, gs.ldb = features;
    cpu::gemm_batched(logits.data(), feat.data(), &params[fc_w], gs);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < classes; ++k) logits[i * classes + k] += params[fc_b + k];
    have_forward = train;
    return cpu::softmax_xent(train ? dlogits.data() : nullptr, logits.data(), labels.data(), n, classes, correct);
  }

  void backward() {
    HG_ASSERT(have_forward, "backward() needs a train-mode forward()");
    // fc: dW = dlogits^T feat, db = column sums, dfeat = dlogits W.
    float* dfeat = g[0].data();
    if (is_trainable(fc_w)) {
      GemmShape gw;
      gw.M = classes, gw.N = features, gw.K = n, gw.trans_a = true, gw.lda = classes, gw.ldb = features;
      cpu::gemm_batched(&grads[fc_w], dlogits.data(), feat.data(), gw);
      for (int64_t k = 0; k < classes; ++k) {
        double s = 0;
        for (int64_t i = 0; i < n; ++i) s += dlogits[i * classes + k];
        grads[fc_b + k] = static_cast<float>(s);
      }
    }
    GemmShape gx;
    gx.M = n, gx.N = features, gx.K = classes, gx.lda = classes, gx.ldb = features;
    cpu::gemm_batched(dfeat, dlogits.data(), &params[fc_w], gx);
    // Global average pool, then the blocks in reverse. g[1] holds the gradient flowing down.
    const Block& last = blocks[7];
    cpu::global_avgpool_backward(g[1].data(), dfeat, n * features, last.c2.conv.OH() * last.c2.conv.OW());
    for (int b = 7; b >= 0; --b) {
      Block& bl = blocks[b];
      const int64_t out_n = n * bl.c2.conv.K * bl.c2.conv.OH() * bl.c2.conv.OW();
      float* dsum = g[2].data();
      cpu::relu_backward_from_output(dsum, g[1].data(), bl.out.data(), out_n);
      float* dmid = g[3].data();
      convbn_backward(bl.c2, dsum, g[4].data(), dmid);
      cpu::relu_backward_from_output(dmid, dmid, bl.mid.data(), out_n);
      float* dx = g[1].data();  // the block's input gradient replaces the flowing gradient
      convbn_backward(bl.c1, dmid, g[4].data(), dx);
      const int64_t in_n = n * bl.c1.conv.C * bl.c1.conv.H * bl.c1.conv.W;
      if (bl.has_down) {
        convbn_backward(bl.down, dsum, g[4].data(), g[5].data());
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < in_n; ++i) dx[i] += g[5][i];
      } else {
#pragma omp parallel for simd schedule(static)
        for (int64_t i = 0; i < in_n; ++i) dx[i] += dsum[i];
      }
    }
    pool.N = n;
    cpu::maxpool2d_backward(g[2].data(), g[1].data(), pool_argmax.data(), pool);
    const int64_t stem_n = n * 64 * stem.conv.OH() * stem.conv.OW();
    cpu::relu_backward_from_output(g[2].data(), g[2].data(), stem_relu.data(), stem_n);
    convbn_backward(stem, g[2].data(), g[3].data(), nullptr);  // nothing below the first conv
  }
};

// -------------------------------------------------------------------------------------------
ResNet18::ResNet18(int64_t batch, int64_t height, int64_t width, int64_t in_channels, int64_t classes)
    : impl_(new Impl(batch, height, width, in_channels, classes)) {}
ResNet18::~ResNet18() { delete impl_; }

void ResNet18::init_random(uint64_t seed) {
  Impl& m = *impl_;
  uint64_t stream = 0;
  for (const Entry& e : m.entries) {
    ++stream;
    if (e.kind == Entry::Counter) {
      m.counters[e.offset] = 0;
      continue;
    }
    float* p = e.kind == Entry::Param ? &m.params[e.offset] : &m.buffers[e.offset];
    const Philox rng(seed, stream);
    const int64_t n = e.numel();
    const auto ends_with = [&](const char* suffix) {
      const std::string s(suffix);
      return e.name.size() >= s.size() && e.name.compare(e.name.size() - s.size(), s.size(), s) == 0;
    };
    if (e.name.rfind("fc.", 0) == 0) {  // nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
      const float bound = 1.f / std::sqrt(static_cast<float>(m.features));
      for (int64_t i = 0; i < n; ++i) p[i] = (2.f * rng.uniform(i) - 1.f) * bound;
    } else if (e.shape.size() == 4) {  // conv: kaiming_normal_(mode='fan_out', relu)
      const float std = std::sqrt(2.f / static_cast<float>(e.shape[0] * e.shape[2] * e.shape[3]));
      for (int64_t i = 0; i < n; ++i) p[i] = rng.normal(i) * std;
    } else if (ends_with(".weight") || ends_with(".running_var")) {
      std::fill(p, p + n, 1.f);
    } else {  // BN bias, running_mean
      std::fill(p, p + n, 0.f);
    }
  }
  std::fill(m.velocity.begin(), m.velocity.end(), 0.f);
}

void ResNet18::load(const StateDict& sd, bool strict) {
  Impl& m = *impl_;
  for (const auto& [name, t] : sd.entries) {
    const Entry* e = m.find(name);
    if (!e) {
      HG_REQUIRE(!strict, "checkpoint key '", name, "' is not a parameter of the adapted ResNet18");
      continue;
    }
    HG_REQUIRE(t.shape() == e->shape, "checkpoint key '", name, "' has shape ", shape_str(t.shape()),
               ", the model needs ", shape_str(e->shape));
    if (e->kind == Entry::Counter) {
      HG_REQUIRE(t.dtype() == DType::I64, "checkpoint key '", name, "' must be an integer");
      m.counters[e->offset] = t.data<int64_t>()[0];
    } else {
      HG_REQUIRE(t.dtype() == DType::F32, "checkpoint key '", name, "' must be floating point");
      float* dst = e->kind == Entry::Param ? &m.params[e->offset] : &m.buffers[e->offset];
      std::copy_n(t.data<float>(), e->numel(), dst);
    }
  }
  if (strict)
    for (const Entry& e : m.entries)
      HG_REQUIRE(sd.find(e.name) != nullptr, "checkpoint lacks key '", e.name, "'");
}

StateDict ResNet18::state_dict() const {
  const Impl& m = *impl_;
  StateDict sd;
  for (const Entry& e : m.entries) {
    Tensor t = Tensor::empty(e.shape, Device::CPU, e.kind == Entry::Counter ? DType::I64 : DType::F32);
    if (e.kind == Entry::Counter) t.data<int64_t>()[0] = m.counters[e.offset];
    else std::copy_n(e.kind == Entry::Param ? &m.params[e.offset] : &m.buffers[e.offset], e.numel(), t.data<float>());
    sd.add(e.name, std::move(t));
  }
  return sd;
}

StateDict ResNet18::momentum_state() const {
  const Impl& m = *impl_;
  StateDict sd;
  for (size_t i = 0; i < m.entries.size(); ++i) {
    const Entry& e = m.entries[i];
    if (e.kind != Entry::Param || !m.trainable[i]) continue;
    Tensor t = Tensor::empty(e.shape);
    std::copy_n(&m.velocity[e.offset], e.numel(), t.data<float>());
    sd.add(e.name, std::move(t));
  }
  return sd;
}

void ResNet18::set_freeze(const std::string& mode) {
  Impl& m = *impl_;
  HG_REQUIRE(mode == "backbone" || mode == "none", "--freeze must be backbone or none, got '", mode, "'");
  m.freeze = mode;
  for (size_t i = 0; i < m.entries.size(); ++i) {
    const std::string& n = m.entries[i].name;
    m.trainable[i] = mode == "none" || n == "conv1.weight" || n.rfind("fc.", 0) == 0;
  }
}

bool ResNet18::trainable(const std::string& name) const {
  for (size_t i = 0; i < impl_->entries.size(); ++i)
    if (impl_->entries[i].name == name) return impl_->entries[i].kind == Entry::Param && impl_->trainable[i];
  return false;
}

double ResNet18::forward(const float* images, const int32_t* labels, int64_t n, bool train, int64_t* correct) {
  return impl_->forward(images, labels, n, train, correct);
}
const float* ResNet18::logits() const { return impl_->logits.data(); }
void ResNet18::backward() { impl_->backward(); }

void ResNet18::sgd_step(float lr, float momentum) {
  Impl& m = *impl_;
  for (size_t i = 0; i < m.entries.size(); ++i) {
    const Entry& e = m.entries[i];
    if (e.kind == Entry::Param && m.trainable[i])
      cpu::sgd_momentum_step(&m.params[e.offset], &m.grads[e.offset], &m.velocity[e.offset], e.numel(), lr, momentum);
  }
}

int64_t ResNet18::parameter_count() const { return impl_->param_end; }
int64_t ResNet18::trainable_count() const {
  int64_t c = 0;
  for (size_t i = 0; i < impl_->entries.size(); ++i)
    if (impl_->entries[i].kind == Entry::Param && impl_->trainable[i]) c += impl_->entries[i].numel();
  return c;
}

}  // namespace handgrad
