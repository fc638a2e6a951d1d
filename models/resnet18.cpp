#include "models/resnet18.h"

#include <algorithm>
#include <cmath>
#include <tuple>

#include "host/einsum_ops.h"
#include "host/layer_profile.h"
#include "host/memory.h"
#include "host/nn.h"
#include "host/param_store.h"
#include "host/step_graph.h"
#include "kernels/philox.h"

namespace handgrad {

namespace {

// A float array on the model's device.
struct Array {
  Tensor t;
  void alloc(int64_t n, Device d) { t = Tensor::zeros({std::max<int64_t>(n, 1)}, d); }
  float* get() { return t.data<float>(); }
  const float* get() const { return t.data<float>(); }
};

// conv -> BN, with what the backward pass needs. The BN's output is never stored: its scale and
// shift are applied on the way into the ReLU (or residual join) that follows.
struct ConvBN {
  nn::Conv2d conv;
  int64_t w = 0, gamma = 0, beta = 0, running_mean = 0, running_var = 0, counter = 0;
  bool train_conv = true, train_bn = true;
  Array conv_out, save_mean, save_invstd;
  Array scale, shift;  // the BN as y = x * scale + shift
  const float* input = nullptr;
  // The conv's im2col rows of `input`, kept by a training forward for backward filter (a layer
  // that trains on the tap-exact group path both ways; made at its first training forward).
  Array im2col;
  bool im2col_kept = false;
  const Conv2dShape& shape() const { return conv.shape; }
};

struct Block {
  ConvBN c1, c2, down;
  bool has_down = false;
  Array mid, out;  // relu(bn1(conv1(x))), relu(bn2(conv2(mid)) + identity)
};

// The layer families a step's time is split into (set_profiling), in the order a step meets them.
enum Family { kConvFwd, kBnFwd, kResidualAdd, kPool, kFcLoss, kBnBwd, kConvBwdData, kConvBwdFilter, kSgd, kFamilies };
constexpr const char* kFamilyNames[kFamilies] = {
    "conv forward",       "batchnorm+relu forward", "residual add",         "pooling", "fc + loss",
    "batchnorm+relu backward", "conv backward data",     "conv backward filter", "sgd"};

}  // namespace

std::vector<std::pair<std::string, Conv2dShape>> resnet18_conv_shapes(int64_t batch, int64_t height, int64_t width,
                                                                      int64_t in_channels) {
  std::vector<std::pair<std::string, Conv2dShape>> shapes{{"conv1", {batch, in_channels, height, width, 64, 7, 7, 2, 3}}};
  const Pool2dShape pool{batch, 64, shapes[0].second.OH(), shapes[0].second.OW(), 3, 2, 1};
  int64_t h = pool.OH(), w = pool.OW(), C = 64;
  for (int stage = 0; stage < 4; ++stage) {
    const int64_t K = 64 << stage;
    for (int j = 0; j < 2; ++j) {
      const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(j) + ".";
      const int64_t stride = (stage > 0 && j == 0) ? 2 : 1;
      const Conv2dShape c1{batch, C, h, w, K, 3, 3, stride, 1};
      shapes.push_back({p + "conv1", c1});
      shapes.push_back({p + "conv2", {batch, K, c1.OH(), c1.OW(), K, 3, 3, 1, 1}});
      if (stride != 1 || C != K) shapes.push_back({p + "downsample.0", {batch, C, h, w, K, 1, 1, stride, 0}});
      h = c1.OH(), w = c1.OW(), C = K;
    }
  }
  return shapes;
}

std::vector<std::pair<std::string, Shape>> resnet18_state_shapes(int64_t in_channels, int64_t classes) {
  std::vector<std::pair<std::string, Shape>> out;
  for (const auto& [conv, s] : resnet18_conv_shapes(1, 224, 224, in_channels)) {
    out.push_back({conv + ".weight", {s.K, s.C, s.R, s.S}});
    // Its BatchNorm: conv1 -> bn1, layer1.0.conv2 -> layer1.0.bn2, downsample.0 -> downsample.1.
    const size_t at = conv.rfind("conv");
    const std::string bn = at != std::string::npos ? conv.substr(0, at) + "bn" + conv.substr(at + 4)
                                                   : conv.substr(0, conv.size() - 1) + "1";
    for (const char* e : {".weight", ".bias", ".running_mean", ".running_var"}) out.push_back({bn + e, {s.K}});
    out.push_back({bn + ".num_batches_tracked", {}});
  }
  out.push_back({"fc.weight", {classes, 512}});
  out.push_back({"fc.bias", {classes}});
  return out;
}

// The network, written once for both devices: activations are channels-last ([N, H, W, C]) on
// both, and every layer goes through host/nn.h, which sends it to the device the model lives on.
struct ResNet18::Impl {
  int64_t batch, H, W, Cin, classes, n = 0;
  Device dev;
  bool tf32;
  ParamStore store;  // parameters, gradients, momentum, running statistics, counters
  // Every buffer the model makes on the host (parameters, packed weights, activations, scratch),
  // checked as a whole against the memory budget before each is allocated: a batch of 65536 images
  // needs tens of GB in pieces each under the budget.
  MemoryTally host_buffers;

  ConvBN stem;
  Array stem_relu, pool_out;
  Buffer pool_argmax;  // int32
  Pool2dShape pool;
  Block blocks[8];
  int64_t fc_w = 0, fc_b = 0, features = 512;
  Array feat, logits, dlogits, row_loss, conv_workspace, bn_workspace, sum_workspace;
  Buffer row_correct;  // int32 per image (the GPU's loss path)
  nn::LossSums sums;   // the summed loss and right answers since take_sums(), on the device
  // The captured training step (train_step_graphed) and what it was captured for.
  StepGraph graph;
  using GraphKey = std::tuple<const void*, const void*, float, float>;  // images, labels, lr, momentum
  GraphKey graph_for;
  std::string graph_disabled;  // why capture failed (then every step runs eagerly)
  Array g[5];  // backward scratch, each as large as the largest activation (made by the first training forward)
  bool have_forward = false;
  bool planned_full_batch = false;  // an eager full-batch training step ran: every plan exists
  int64_t workspace_batch = 0;  // the batch size conv_workspace was last sized for
  LayerProfile profile;
  using Span = LayerProfile::Scope;

  // An array (or a buffer) of the model's, counted in host_buffers first when it lives on the host.
  void alloc(Array& a, int64_t floats) {
    if (dev == Device::CPU) host_buffers.add(sizeof(float) * static_cast<uint64_t>(std::max<int64_t>(floats, 1)));
    a.alloc(floats, dev);
  }
  Buffer buffer(size_t bytes) {
    if (dev == Device::CPU) host_buffers.add(bytes);
    return Buffer(bytes, dev);
  }

  ConvBN make_convbn(const std::string& conv_name, const std::string& bn_name, int64_t C, int64_t K, int64_t R,
                     int64_t stride, int64_t pad, int64_t h, int64_t w) {
    ConvBN u;
    u.conv = nn::Conv2d({batch, C, h, w, K, R, R, stride, pad}, dev, tf32, &host_buffers);
    using Kind = ParamStore::Kind;
    u.w = store.add(Kind::Param, conv_name + ".weight", {K, C, R, R});
    u.gamma = store.add(Kind::Param, bn_name + ".weight", {K});
    u.beta = store.add(Kind::Param, bn_name + ".bias", {K});
    u.running_mean = store.add(Kind::Buffer, bn_name + ".running_mean", {K});
    u.running_var = store.add(Kind::Buffer, bn_name + ".running_var", {K});
    u.counter = store.add(Kind::Counter, bn_name + ".num_batches_tracked", {});
    alloc(u.conv_out, batch * K * u.shape().OH() * u.shape().OW());
    for (Array* a : {&u.save_mean, &u.save_invstd, &u.scale, &u.shift}) alloc(*a, K);
    return u;
  }

  Impl(int64_t b, int64_t h, int64_t w, Device d, bool tf, int64_t cin, int64_t k)
      : batch(b), H(h), W(w), Cin(cin), classes(k), dev(d), tf32(tf),
        host_buffers(cat("ResNet18 for a batch of ", b, " images of ", h, "x", w)), sums(d),
        profile(d, kFamilyNames) {
    HG_REQUIRE(b > 0 && h > 0 && w > 0 && cin > 0 && k > 0, "ResNet18: sizes must be positive");
    stem = make_convbn("conv1", "bn1", cin, 64, 7, 2, 3, h, w);
    int64_t sh = stem.shape().OH(), sw = stem.shape().OW();
    alloc(stem_relu, batch * 64 * sh * sw);
    pool = {batch, 64, sh, sw, 3, 2, 1};
    const int64_t pooled = batch * 64 * pool.OH() * pool.OW();
    alloc(pool_out, pooled);
    pool_argmax = buffer(sizeof(int32_t) * pooled);
    sh = pool.OH(), sw = pool.OW();
    int64_t C = 64, idx = 0;
    for (int stage = 0; stage < 4; ++stage) {
      const int64_t K = 64 << stage;
      for (int j = 0; j < 2; ++j, ++idx) {
        const std::string p = "layer" + std::to_string(stage + 1) + "." + std::to_string(j) + ".";
        const int64_t stride = (stage > 0 && j == 0) ? 2 : 1;
        Block& bl = blocks[idx];
        bl.c1 = make_convbn(p + "conv1", p + "bn1", C, K, 3, stride, 1, sh, sw);
        const int64_t oh = bl.c1.shape().OH(), ow = bl.c1.shape().OW();
        bl.c2 = make_convbn(p + "conv2", p + "bn2", K, K, 3, 1, 1, oh, ow);
        bl.has_down = stride != 1 || C != K;
        if (bl.has_down) bl.down = make_convbn(p + "downsample.0", p + "downsample.1", C, K, 1, stride, 0, sh, sw);
        alloc(bl.mid, batch * K * oh * ow);
        alloc(bl.out, batch * K * oh * ow);
        C = K, sh = oh, sw = ow;
      }
    }
    fc_w = store.add(ParamStore::Kind::Param, "fc.weight", {classes, features});
    fc_b = store.add(ParamStore::Kind::Param, "fc.bias", {classes});
    store.allocate(dev, &host_buffers);
    alloc(feat, batch * features);
    alloc(logits, batch * classes);
    alloc(dlogits, batch * classes);
    alloc(row_loss, batch);
    row_correct = buffer(sizeof(int32_t) * batch);
    // Scratch, each sized once for the largest layer at the full batch.
    int64_t bn_ws = 1;
    for_each_convbn([&](const ConvBN& u) {
      bn_ws = std::max(bn_ws, nn::batchnorm_workspace_floats(dev, rows(u, batch), u.shape().K));
    });
    alloc(conv_workspace, conv_workspace_floats());
    workspace_batch = batch;
    alloc(bn_workspace, bn_ws);
    alloc(sum_workspace, nn::column_sums_workspace_floats(dev, batch, classes));
    set_freeze("none");
  }

  // The backward pass's scratch, made by the first training forward: a model that only evaluates
  // (handgrad.ResNet18's forward) never needs it. (Capture waits for an eager training step, so
  // nothing is allocated inside a graph.)
  void make_backward_scratch() {
    if (g[0].t.defined()) return;
    int64_t act = std::max(stem.conv_out.t.numel(), pool_out.t.numel());
    for_each_convbn([&](const ConvBN& u) { act = std::max(act, u.conv_out.t.numel()); });
    for (Array& a : g) alloc(a, act);
  }

  void set_freeze(const std::string& mode) {
    HG_REQUIRE(mode == "backbone" || mode == "none", "--freeze must be backbone or none, got '", mode, "'");
    store.set_trainable([&](const ParamStore::Entry& e) {
      return mode == "none" || e.name == "conv1.weight" || e.name.rfind("fc.", 0) == 0;
    });
    for_each_convbn([&](ConvBN& u) {
      u.train_conv = mode == "none" || &u == &stem;
      u.train_bn = mode == "none";
    });
    graph.reset();  // a captured step updates the old ranges
    // Layers that now train have not run their backward-filter convolutions eagerly yet: the next
    // capture waits for an eager full-batch step, so no plan (or algorithm fallback) is first made
    // inside a capture.
    planned_full_batch = false;
  }

  float* P(int64_t off) { return store.param(off); }
  float* G(int64_t off) { return store.grad(off); }
  float* B(int64_t off) { return store.buffer(off); }

  // ---------------------------------------------------------------------------------------
  // The layers.

  // The convolutions read their weights through a copy packed for the device's library,
  // re-packed after each change of the weights (all of them, or those that train).
  void weights_changed(bool only_trainable) {
    for_each_convbn([&](ConvBN& u) {
      if (!only_trainable || u.train_conv) u.conv.weights_changed();
    });
  }
  template <class F>
  void for_each_convbn(F f) {
    f(stem);
    for (Block& bl : blocks) {
      f(bl.c1);
      f(bl.c2);
      if (bl.has_down) f(bl.down);
    }
  }

  // A batch of n images (the last of an epoch may be short): the CPU convolutions' scratch
  // depends on it.
  void resize_batch(int64_t count) {
    n = count;
    for_each_convbn([&](ConvBN& u) { u.conv.shape.N = n; });
    pool.N = n;
    if (count == workspace_batch) return;
    const int64_t need = conv_workspace_floats();
    if (need > conv_workspace.t.numel()) conv_workspace.alloc(need, dev);  // grows at most once per new size
    workspace_batch = count;
  }
  // The convolutions' scratch for the current batch: the most any layer needs.
  int64_t conv_workspace_floats() {
    int64_t need = 0;
    for_each_convbn([&](const ConvBN& u) { need = std::max(need, u.conv.workspace_floats()); });
    return need;
  }

  static int64_t rows(const ConvBN& u, int64_t images) { return images * u.shape().OH() * u.shape().OW(); }
  int64_t rows(const ConvBN& u) const { return rows(u, n); }

  // conv, then the BN's statistics (train) and its scale and shift.
  void convbn_forward(ConvBN& u, const float* x, bool train) {
    u.input = x;
    u.im2col_kept = false;
    if (train && u.train_conv && u.conv.keepable_im2col_floats(n) > 0) {
      if (u.im2col.t.numel() < u.conv.keepable_im2col_floats(n))  // sized for the full batch, once
        alloc(u.im2col, u.conv.keepable_im2col_floats(batch));
      u.im2col_kept = true;
    }
    {
      const Span span(profile, kConvFwd);
      u.conv.forward(u.conv_out.get(), x, P(u.w), conv_workspace.get(), u.im2col_kept ? u.im2col.get() : nullptr);
    }
    const Span span(profile, kBnFwd);
    const int64_t K = u.shape().K;
    if (train) {
      nn::batchnorm_stats(dev, u.save_mean.get(), u.save_invstd.get(), B(u.running_mean), B(u.running_var),
                          u.conv_out.get(), rows(u), K, bn_workspace.get());
      nn::batchnorm_scale_shift(dev, u.scale.get(), u.shift.get(), P(u.gamma), P(u.beta), u.save_mean.get(),
                                u.save_invstd.get(), K);
      ++store.counters()[u.counter];
    } else {
      nn::batchnorm_eval_scale_shift(dev, u.scale.get(), u.shift.get(), P(u.gamma), P(u.beta), B(u.running_mean),
                                     B(u.running_var), K);
    }
  }

  // y = relu(bn(u) [+ bn(second) | + residual]): the ReLU after a BN, or a block's residual join.
  void bn_relu(float* y, const ConvBN& u, const ConvBN* second, const float* residual) {
    const Span span(profile, kBnFwd);
    nn::scale_shift_relu(dev, y, u.conv_out.get(), u.scale.get(), u.shift.get(),
                         second ? second->conv_out.get() : nullptr, second ? second->scale.get() : nullptr,
                         second ? second->shift.get() : nullptr, residual, rows(u), u.shape().K);
  }

  // dy reaches the ReLU (whose output is relu_out) after u's BN: the BN's gradients (when they
  // train), the conv's weight gradient (when it trains) and, when dx is not null, the input's.
  void convbn_backward(ConvBN& u, const float* dy, const float* relu_out, float* dx) {
    float* dconv = g[4].get();
    {
      const Span span(profile, kBnBwd);
      nn::batchnorm_backward(dev, dconv, u.train_bn ? G(u.gamma) : nullptr, u.train_bn ? G(u.beta) : nullptr, dy,
                             relu_out, u.conv_out.get(), P(u.gamma), u.save_mean.get(), u.save_invstd.get(), rows(u),
                             u.shape().K, bn_workspace.get());
    }
    if (u.train_conv) {
      const Span span(profile, kConvBwdFilter);
      u.conv.backward_filter(G(u.w), dconv, u.input, conv_workspace.get(), u.im2col_kept ? u.im2col.get() : nullptr);
    }
    if (dx) {
      const Span span(profile, kConvBwdData);
      u.conv.backward_data(dx, dconv, P(u.w), conv_workspace.get());
    }
  }

  // The values each channel of layer4's BatchNorm sees for `n` images (the fewest of any BN).
  int64_t last_bn_values(int64_t images) const {
    return images * blocks[7].c2.shape().OH() * blocks[7].c2.shape().OW();
  }

  void forward(const float* images, const int32_t* labels, int64_t count, bool train) {
    HG_REQUIRE(count > 0 && count <= batch, "ResNet18: ", count, " images for a network sized for ", batch);
    // PyTorch's rule and words: batch statistics of one value have no variance to normalise by.
    HG_REQUIRE(!train || last_bn_values(count) > 1, "Expected more than 1 value per channel when training, got ",
               "input size [", count, ", 512, ", blocks[7].c2.shape().OH(), ", ", blocks[7].c2.shape().OW(),
               "] at layer4's BatchNorm: train on batches of at least 2 images (PyTorch refuses the same)");
    resize_batch(count);  // (one input channel: NCHW and NHWC images are the same bytes)
    if (train) make_backward_scratch();
    convbn_forward(stem, images, train);
    bn_relu(stem_relu.get(), stem, nullptr, nullptr);
    {
      const Span span(profile, kPool);
      nn::maxpool_forward(dev, pool_out.get(), static_cast<int32_t*>(pool_argmax.get()), stem_relu.get(), pool);
    }
    const float* cur = pool_out.get();
    for (Block& bl : blocks) {
      convbn_forward(bl.c1, cur, train);
      bn_relu(bl.mid.get(), bl.c1, nullptr, nullptr);
      convbn_forward(bl.c2, bl.mid.get(), train);
      if (bl.has_down) convbn_forward(bl.down, cur, train);
      bn_relu(bl.out.get(), bl.c2, bl.has_down ? &bl.down : nullptr, bl.has_down ? nullptr : cur);
      cur = bl.out.get();
    }
    const Span span(profile, kFcLoss);  // with the global average pool
    const int64_t last_hw = blocks[7].c2.shape().OH() * blocks[7].c2.shape().OW();
    nn::global_avgpool_forward(dev, feat.get(), cur, n, last_hw, features);
    GemmShape gs;  // logits = feat fc.weight^T + fc.bias
    gs.M = n, gs.N = classes, gs.K = features, gs.trans_b = true, gs.lda = features, gs.ldb = features;
    nn::gemm(dev, logits.get(), feat.get(), P(fc_w), gs);
    nn::add_row_bias(dev, logits.get(), P(fc_b), n, classes);
    // The loss stays on the device until someone asks (take_sums): no copy, no synchronisation.
    nn::softmax_xent(dev, train ? dlogits.get() : nullptr, sums.on_device(), row_loss.get(),
                     static_cast<int32_t*>(row_correct.get()), logits.get(), labels, n, classes);
    have_forward = train;
    planned_full_batch = planned_full_batch || (train && n == batch);
    sums.images += n;
  }

  void sgd(float lr, float mu) {
    const Span span(profile, kSgd);
    nn::sgd_momentum(dev, store.params(), store.grads(), store.velocity(), store.train_ranges(), lr, mu);
    weights_changed(true);
  }

  // Captures forward(train) + backward + SGD for a full batch. Capture runs nothing, so the
  // host-side effects of the captured forward (BN step counters, the images summed) are undone
  // here and redone on each replay. The step packs every convolution's weights first, so each
  // replay reads the weights the previous one left, whatever the host-side flags said at
  // capture time; and since the packs were only recorded, every flag is stale again after.
  bool capture_train_step(const float* images, const int32_t* labels, float lr, float mu) {
    const HostBooks books = host_books();
    const bool ok = graph.capture(
        dev,
        [this, images, labels, lr, mu] {
          weights_changed(false);
          forward(images, labels, batch, true);
          backward();
          sgd(lr, mu);
        },
        &graph_disabled);
    restore_host_books(books);
    weights_changed(false);
    if (ok) graph_for = {images, labels, lr, mu};
    return ok;
  }

  // What the host knows about the model besides the device's memory: what a captured step's
  // host code changes when it runs, and a GPU replay does not.
  struct HostBooks {
    std::vector<int64_t> counters;  // BN layers' num_batches_tracked
    int64_t images = 0;
    int64_t batch_rows = 0;  // n: the batch the layers' shapes are sized for
    bool have_forward = false;
    const float* stem_input = nullptr;
    std::vector<bool> packed_stale;  // per convolution, for_each_convbn's order
  };
  HostBooks host_books() {
    HostBooks b{store.counters(), sums.images, n, have_forward, stem.input, {}};
    for_each_convbn([&](ConvBN& u) { b.packed_stale.push_back(u.conv.packed_stale()); });
    return b;
  }
  void restore_host_books(const HostBooks& b) {
    store.counters() = b.counters;
    sums.images = b.images;
    resize_batch(b.batch_rows);
    have_forward = b.have_forward;
    stem.input = b.stem_input;
    size_t i = 0;
    for_each_convbn([&](ConvBN& u) { u.conv.restore_packed_stale(b.packed_stale[i++]); });
  }

  // The first full-batch step runs eagerly: it makes every convolution plan (a plan made during
  // capture would allocate, or time algorithms, inside the graph).
  bool train_step_graphed(const float* images, const int32_t* labels, float lr, float mu) {
    if (graph_disabled.empty() && !profile.on && planned_full_batch) {
      const bool same = graph.ready() && graph_for == GraphKey{images, labels, lr, mu};
      if (same || capture_train_step(images, labels, lr, mu)) {
        // On the CPU the replay reruns the step's host code too: its books are put back as a
        // GPU replay leaves them, then brought up to date with what the step did.
        const HostBooks books = host_books();
        graph.replay();
        restore_host_books(books);
        for (int64_t& c : store.counters()) ++c;  // a full-batch training forward
        sums.images += batch;
        resize_batch(batch);
        have_forward = true;
        stem.input = images;
        // The replayed step packed the weights before its SGD update changed them: the packs of
        // the trainable convolutions are one step old. (Forgetting this let the next eager
        // forward, the short last batch or an evaluation, run on the previous step's weights.)
        weights_changed(true);
        return true;
      }
    }
    forward(images, labels, batch, true);
    backward();
    sgd(lr, mu);
    return false;
  }

  void backward() {
    HG_ASSERT(have_forward, "backward() needs a train-mode forward()");
    float* flow = g[1].get();   // the gradient flowing down: w.r.t. a block's output
    float* below = g[2].get();  // w.r.t. its input
    fc_backward(flow);
    for (int b = 7; b >= 0; --b) {
      Block& bl = blocks[b];
      float* dmid = g[3].get();
      convbn_backward(bl.c2, flow, bl.out.get(), dmid);
      convbn_backward(bl.c1, dmid, bl.mid.get(), below);
      const int64_t in_n = n * bl.c1.shape().C * bl.c1.shape().H * bl.c1.shape().W;
      if (bl.has_down) convbn_backward(bl.down, flow, bl.out.get(), g[3].get());
      {  // the join: below += the downsample's gradient, or the identity's through the join's ReLU
        const Span span(profile, kResidualAdd);
        nn::add_relu_backward(dev, below, bl.has_down ? g[3].get() : flow, bl.has_down ? nullptr : bl.out.get(), in_n);
      }
      std::swap(flow, below);
    }
    {
      const Span span(profile, kPool);
      nn::maxpool_backward(dev, below, flow, static_cast<const int32_t*>(pool_argmax.get()), pool);
    }
    convbn_backward(stem, below, stem_relu.get(), nullptr);  // nothing below the first conv
  }

  // dlogits -> the fc layer's gradients and, in dout, the gradient of the last block's output.
  void fc_backward(float* dout) {
    const Span span(profile, kFcLoss);
    // fc: dW = dlogits^T feat, db = column sums of dlogits, dfeat = dlogits W. (fc trains in
    // every freeze mode: it is always fresh.)
    float* dfeat = g[0].get();
    GemmShape gw;
    gw.M = classes, gw.N = features, gw.K = n, gw.trans_a = true, gw.lda = classes, gw.ldb = features;
    nn::gemm(dev, G(fc_w), dlogits.get(), feat.get(), gw);
    // (n may be less than the batch the model was sized for: the last batch of an epoch.)
    nn::column_sums(dev, G(fc_b), dlogits.get(), n, classes, sum_workspace.get());
    GemmShape gx;
    gx.M = n, gx.N = features, gx.K = classes, gx.lda = classes, gx.ldb = features;
    nn::gemm(dev, dfeat, dlogits.get(), P(fc_w), gx);
    const int64_t last_hw = blocks[7].c2.shape().OH() * blocks[7].c2.shape().OW();
    nn::global_avgpool_backward(dev, dout, dfeat, n, last_hw, features);
  }
};

// -------------------------------------------------------------------------------------------
ResNet18::ResNet18(int64_t batch, int64_t height, int64_t width, Device device, bool tf32, int64_t in_channels,
                   int64_t classes)
    : impl_(new Impl(batch, height, width, device, tf32, in_channels, classes)) {}
ResNet18::~ResNet18() { delete impl_; }

void ResNet18::init_random(uint64_t seed) {
  Impl& m = *impl_;
  m.store.init([&](const ParamStore::Entry& e, int64_t index, float* p) {
    const Philox rng(seed, static_cast<uint64_t>(index) + 1);  // a stream per entry
    const int64_t n = e.numel();
    if (e.name.rfind("fc.", 0) == 0) {  // nn.Linear's default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
      const float bound = 1.f / std::sqrt(static_cast<float>(m.features));
#pragma omp parallel for schedule(static) if (n > 4096)
      for (int64_t i = 0; i < n; ++i) p[i] = (2.f * rng.uniform(i) - 1.f) * bound;
    } else if (e.shape.size() == 4) {  // conv: kaiming_normal_(mode='fan_out', relu)
      const float std = std::sqrt(2.f / static_cast<float>(e.shape[0] * e.shape[2] * e.shape[3]));
      // Counter-based: element i's value depends on i alone, so threads split the work freely
      // (a third of a second of start-up on one core otherwise).
#pragma omp parallel for schedule(static) if (n > 4096)
      for (int64_t i = 0; i < n; ++i) p[i] = rng.normal(i) * std;
    } else {  // BN: weight and running_var 1, bias and running_mean 0
      const std::string last = e.name.substr(e.name.rfind('.') + 1);
      std::fill(p, p + n, last == "weight" || last == "running_var" ? 1.f : 0.f);
    }
  });
  m.weights_changed(false);
  m.graph.reset();
}

void ResNet18::load(const StateDict& sd, bool strict) {
  impl_->weights_changed(false);  // first: a load that fails half-way has changed weights too
  impl_->graph.reset();
  impl_->store.load(sd, strict, "adapted ResNet18");
}

StateDict ResNet18::state_dict() const { return impl_->store.state_dict(); }
void ResNet18::copy_weights(const ResNet18& from) {
  impl_->weights_changed(false);
  impl_->graph.reset();
  impl_->store.copy_values(from.impl_->store);
}
StateDict ResNet18::momentum_state() const { return impl_->store.momentum_state(); }

void ResNet18::set_freeze(const std::string& mode) { impl_->set_freeze(mode); }
void ResNet18::enqueue_forward(const float* images, const int32_t* labels, int64_t n, bool train) {
  impl_->forward(images, labels, n, train);
}
ResNet18::Sums ResNet18::take_sums() { return impl_->sums.take(); }

double ResNet18::forward(const float* images, const int32_t* labels, int64_t n, bool train, int64_t* correct) {
  // The running sums of a logging window may be pending (an evaluation at the end of an epoch
  // that the window does not end with): set them aside and put them back.
  const Sums pending = impl_->sums.take();
  impl_->forward(images, labels, n, train);
  const Sums s = impl_->sums.take();
  impl_->sums.put_back(pending);
  if (correct) *correct = s.correct;
  return s.loss / static_cast<double>(s.images);
}

std::vector<float> ResNet18::logits() const {
  std::vector<float> out(impl_->n * impl_->classes);
  copy_bytes(out.data(), Device::CPU, impl_->logits.get(), impl_->dev, sizeof(float) * out.size());
  return out;
}

StateDict ResNet18::branches() const {
  const Impl& m = *impl_;
  StateDict sd;
  // Every ReLU output, as PyTorch lays it out (NCHW), from the channels-last activation.
  auto add_relu = [&](const std::string& name, const Array& a, const Conv2dShape& c) {
    Tensor nhwc = Tensor::empty({m.n, c.OH(), c.OW(), c.K});
    copy_bytes(nhwc.raw(), Device::CPU, a.get(), m.dev, nhwc.nbytes());
    sd.add(name, ops::permute(nhwc, {0, 3, 1, 2}));
  };
  add_relu("relu", m.stem_relu, m.stem.shape());
  const Shape pooled{m.n, 64, m.pool.OH(), m.pool.OW()};
  std::vector<int32_t> at(shape_numel(pooled));
  copy_bytes(at.data(), Device::CPU, m.pool_argmax.get(), m.dev, sizeof(int32_t) * at.size());
  Tensor idx = Tensor::empty(pooled, Device::CPU, DType::I64);
  const int64_t plane = m.pool.OH() * m.pool.OW();
  for (int64_t i = 0; i < static_cast<int64_t>(at.size()); ++i) {  // NCHW order, from NHWC
    const int64_t image = i / (64 * plane), c = i / plane % 64, p = i % plane;
    idx.data<int64_t>()[i] = at[(image * plane + p) * 64 + c];
  }
  sd.add("maxpool.indices", std::move(idx));
  for (int b = 0; b < 8; ++b) {
    const std::string p = "layer" + std::to_string(b / 2 + 1) + "." + std::to_string(b % 2) + ".";
    add_relu(p + "relu1", m.blocks[b].mid, m.blocks[b].c1.shape());
    add_relu(p + "relu2", m.blocks[b].out, m.blocks[b].c2.shape());
  }
  return sd;
}

void ResNet18::backward() { impl_->backward(); }
void ResNet18::sgd_step(float lr, float momentum) { impl_->sgd(lr, momentum); }
bool ResNet18::train_step_graphed(const float* images, const int32_t* labels, float lr, float momentum) {
  return impl_->train_step_graphed(images, labels, lr, momentum);
}

void ResNet18::set_profiling(bool on) { impl_->profile.on = on; }
std::vector<std::pair<std::string, double>> ResNet18::profile_seconds() const { return impl_->profile.seconds(); }

std::string ResNet18::graph_disabled_reason() const {
  return impl_->graph_disabled;
}

}  // namespace handgrad
