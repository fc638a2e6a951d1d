// Where the tap-exact lowering beats the library's convolution: every convolution of ResNet18 at
// FashionMNIST's 28x28 (and 32x32, 64x64), each direction, both lowerings, on this machine.
//   build/bench/bench_conv                                  (CPU: oneDNN vs tap-exact GEMMs)
//   build/bench/bench_conv --benchmark_filter='/64/28/'     (batch 64 at 28x28)
//   HANDGRAD_BENCH_COLD=1 build/bench/bench_conv ...         (each call with cold caches, as in a
//                                                             training step; conv2d_lowering's rule
//                                                             was measured so)
// Each row: <lowering>/<direction>/<layer>/<batch>/<input size>; the counters give GFLOP/s of the
// padded convolution's work (so the two lowerings' rates compare like for like) and
// `exact_share`, the fraction of that work the tap-exact lowering does.
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "host/tensor.h"
#include "kernels/nn/conv2d.h"
#include "kernels/nn/conv2d_taps.h"
#include "models/resnet18.h"

using namespace handgrad;

namespace {

void run(benchmark::State& st, Conv2dShape s, ConvLowering lowering, ConvDirection d) {
  const bool taps = lowering == ConvLowering::TapExact;
  Tensor x = Tensor::full({s.N * s.H * s.W * s.C}, 0.5f), w = Tensor::full({s.K * s.C * s.R * s.S}, 0.25f);
  Tensor y = Tensor::full({s.N * s.OH() * s.OW() * s.K}, 1.f), dw = Tensor::zeros({s.K * s.C * s.R * s.S});
  Tensor packed = Tensor::zeros({std::max<int64_t>(
      1, taps ? conv2d_taps_packed_floats(s) : cpu::conv2d_nhwc_packed_floats(s))});
  Tensor ws = Tensor::zeros(
      {std::max<int64_t>(1, taps ? conv2d_taps_workspace_floats(s) : cpu::conv2d_nhwc_workspace_floats(s))});
  float *X = x.data<float>(), *W = w.data<float>(), *Y = y.data<float>(), *P = packed.data<float>();
  if (taps)
    cpu::conv2d_taps_pack_weights(P, W, s);
  else
    cpu::conv2d_nhwc_pack_weights(P, W, s);
  // Cold: before each call, 64 MB of other memory is written (more than the L3), untimed.
  static std::vector<char> other(std::getenv("HANDGRAD_BENCH_COLD") ? 64 << 20 : 0);
  for (auto _ : st) {
    if (!other.empty()) {
      st.PauseTiming();
      for (size_t i = 0; i < other.size(); i += 64) other[i]++;
      st.ResumeTiming();
    }
    if (d == ConvDirection::Forward)
      taps ? cpu::conv2d_taps_forward(Y, X, P, s, ws.data<float>())
           : cpu::conv2d_forward_nhwc(Y, X, W, P, s, ws.data<float>());
    else if (d == ConvDirection::BackwardData)
      taps ? cpu::conv2d_taps_backward_data(X, Y, P, s, ws.data<float>())
           : cpu::conv2d_backward_data_nhwc(X, Y, W, P, s, ws.data<float>());
    else
      taps ? cpu::conv2d_taps_backward_filter(dw.data<float>(), Y, X, s, ws.data<float>())
           : cpu::conv2d_backward_filter_nhwc(dw.data<float>(), Y, X, s, ws.data<float>());
  }
  const double padded = 2.0 * s.N * s.OH() * s.OW() * s.R * s.S * s.C * s.K;
  st.counters["GFLOP/s"] = benchmark::Counter(padded * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["exact_share"] = double(conv2d_tap_exact_macs(s)) / double(s.OH() * s.OW() * s.R * s.S);
  st.counters["chosen"] = conv2d_lowering(s, d) == lowering;
}

const int kRegistered = [] {
  const char* dirs[] = {"fwd", "bwd_data", "bwd_filter"};
  for (const auto& [batch, size] : {std::pair<int64_t, int64_t>{16, 28}, {64, 28}, {16, 32}, {16, 64}})
    for (const auto& [name, s] : resnet18_conv_shapes(batch, size, size)) {
      if (name == "conv1") continue;  // 7x7 on 28x28: both lowerings nearly equal work; the library's
      for (int d = 0; d < 3; ++d)
        for (const auto& [lname, l] : {std::pair<const char*, ConvLowering>{"library", ConvLowering::Library},
                                       {"taps", ConvLowering::TapExact}}) {
          const std::string id = std::string(lname) + "/" + dirs[d] + "/" + name + "/" + std::to_string(batch) + "/" +
                                 std::to_string(size) + "/";
          benchmark::RegisterBenchmark(id.c_str(), run, s, l, ConvDirection(d))->Unit(benchmark::kMillisecond)->UseRealTime();
        }
    }
  return 0;
}();

}  // namespace

BENCHMARK_MAIN();
