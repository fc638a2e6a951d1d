// Benchmarks of the three course contractions, CPU and CUDA, each next to a ceiling measured
// in the same run: memcpy / device-to-device copy bandwidth for the memory-bound ops, OpenBLAS
// or cuBLAS SGEMM for the GEMM. Counters: GB/s (bytes the op must move), TFLOP/s, and
// pct_of_copy / pct_of_cublas. CUDA timings are CUDA-event times (manual time).
//
//   build/bench/bench_einsum --benchmark_filter=cuda     (GPU only)
//   build/bench/bench_einsum --benchmark_filter=cpu      (CPU only)
#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>

#include "host/einsum.h"
#include "kernels/cpu_parallel.h"
#include "kernels/einsum/elementwise.h"
#include "kernels/einsum/gemm.h"
#include "kernels/einsum/ops.h"
#include "kernels/einsum/reduce.h"
#include "kernels/random/random.h"
#ifdef HANDGRAD_WITH_CUDA
#include <cuda_runtime.h>

#include "host/cuda_check.h"
#endif

using namespace handgrad;

namespace {

Shape abcd(const benchmark::State& st) { return {st.range(0), st.range(1), st.range(2), st.range(3)}; }
double gbps(double bytes, double seconds) { return bytes / seconds / 1e9; }

// Sizes: small (latency-bound), medium, large (>= 256 MB per operand on the GPU).
void mul_sizes(benchmark::internal::Benchmark* b, bool gpu) {
  b->ArgNames({"a", "b", "c", "d"});
  b->Args({4, 16, 32, 32});       // 64 Ki floats
  b->Args({16, 32, 64, 128});     // 4 Mi floats, 16 MB
  b->Args({3, 5, 7, 1001});       // odd
  if (gpu) b->Args({16, 64, 256, 256});  // 64 Mi floats, 256 MB per operand
  else b->Args({16, 32, 128, 256});      // 16 Mi floats, 64 MB
}
void sum_sizes(benchmark::internal::Benchmark* b, bool gpu) {
  b->ArgNames({"a", "b", "c", "d"});
  b->Args({8, 8, 64, 64});
  b->Args({32, 32, 256, 32});
  b->Args({64, 64, 1024, 1});     // d = 1: row sums
  b->Args({8, 8, 16384, 3});      // tiny, odd d
  b->Args({2, 2, 1 << 20, 5});    // huge c, few outputs
  b->Args({128, 128, 7, 129});    // short c, odd d
  b->Args({1000, 100, 2, 2});     // [100000, 2, 2]: few rows and lanes per output
  b->Args({512, 512, 3, 1});      // [262144, 3, 1]: what 'abcd->abc' with a small d lowers to
  if (gpu) b->Args({64, 64, 256, 256});  // 1 GiB input
}
void gemm_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"a", "b", "c", "d", "e"});
  b->Args({2, 3, 4, 5, 6});           // the course's toy shape
  b->Args({7, 9, 11, 13, 17});        // small and odd
  b->Args({8, 16, 32, 64, 16});       // tall-skinny
  b->Args({8, 16, 32, 128, 128});     // medium
  b->Args({4, 16, 64, 1024, 1024});   // M = 4096, N = K = 1024
  b->Args({4, 16, 64, 4096, 4096});   // large: M = N = K = 4096
}
GemmShape course_gemm(const benchmark::State& st) {
  GemmShape s;  // 'abcd,ed->abce': [abc, d] x [e, d]^T
  s.M = st.range(0) * st.range(1) * st.range(2);
  s.K = st.range(3);
  s.N = st.range(4);
  s.trans_b = true;
  s.lda = s.K;
  s.ldb = s.K;
  return s;
}

// ------------------------------------------------------------------------------------------
// CPU
// ------------------------------------------------------------------------------------------
// memcpy bandwidth on all OpenMP threads (as the kernels use), counting read + write.
double cpu_copy_gbps(size_t bytes) {
  static std::map<size_t, double> cache;
  if (auto it = cache.find(bytes); it != cache.end()) return it->second;
  std::vector<char> a(bytes / 2 + 64, 1), b(bytes / 2 + 64);
  double best = 0;
  for (int r = 0; r < 5; ++r) {
    auto t0 = std::chrono::steady_clock::now();
    cpu::parallel_ranges(int64_t(bytes / 2), 1 << 17, [&](int64_t begin, int64_t end) {
      std::memcpy(b.data() + begin, a.data() + begin, size_t(end - begin));
    });
    benchmark::DoNotOptimize(b.data());
    double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    best = std::max(best, gbps(double(bytes), s));
  }
  return cache[bytes] = best;
}

// Runs the benchmark loop over fn and returns the total wall seconds it took.
template <typename Fn>
double time_cpu(benchmark::State& st, Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

void report_cpu_bandwidth(benchmark::State& st, double bytes, double secs) {
  st.counters["GB/s"] = gbps(bytes * st.iterations(), secs);
  st.counters["copy_GB/s"] = cpu_copy_gbps(size_t(bytes));
  st.counters["pct_of_copy"] = 100.0 * st.counters["GB/s"] / st.counters["copy_GB/s"];
}

void BM_cpu_mul(benchmark::State& st) {
  Tensor a = randn(abcd(st), 1), b = randn(abcd(st), 2), out = Tensor::empty(abcd(st));
  const double secs = time_cpu(st, [&] { ops::mul_into(out, a, b); });
  report_cpu_bandwidth(st, 12.0 * a.numel(), secs);
}
BENCHMARK(BM_cpu_mul)->Apply([](auto* b) { mul_sizes(b, false); })->UseRealTime();

void BM_cpu_sum(benchmark::State& st) {
  Tensor a = randn(abcd(st), 1);
  const Shape s = abcd(st);
  Tensor out = Tensor::empty({s[0], s[1], s[3]});
  const double secs = time_cpu(st, [&] { ops::sum_middle_into(out, a, s[0] * s[1], s[2], s[3]); });
  report_cpu_bandwidth(st, 4.0 * (a.numel() + out.numel()), secs);
}
BENCHMARK(BM_cpu_sum)->Apply([](auto* b) { sum_sizes(b, false); })->UseRealTime();

void BM_cpu_gemm(benchmark::State& st) {
  const GemmShape s = course_gemm(st);
  if (s.M * s.N * s.K > (int64_t(1) << 34)) return st.SkipWithError("too large for the CPU");
  Tensor A = randn({s.M, s.K}, 1), B = randn({s.N, s.K}, 2), C = Tensor::empty({1, s.M, s.N});
  const double secs = time_cpu(st, [&] { ops::gemm_batched_into(C, A, B, s); });
  st.counters["TFLOP/s"] = 2e-12 * s.M * s.N * s.K * st.iterations() / secs;
}
BENCHMARK(BM_cpu_gemm)->Apply(gemm_sizes)->UseRealTime();

// ------------------------------------------------------------------------------------------
// CUDA
// ------------------------------------------------------------------------------------------
#ifdef HANDGRAD_WITH_CUDA

// Seconds of GPU time one call of fn() enqueues, by CUDA events on the current stream.
class EventTimer {
 public:
  EventTimer() {
    CUDA_CHECK(cudaEventCreate(&start_));
    CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  EventTimer(const EventTimer&) = delete;
  EventTimer& operator=(const EventTimer&) = delete;
  template <typename Fn>
  double seconds(Fn&& fn) {
    CUDA_CHECK(cudaEventRecord(start_));
    fn();
    CUDA_CHECK(cudaEventRecord(stop_));
    CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms / 1e3;
  }

 private:
  cudaEvent_t start_, stop_;
};

// The benchmark loop over fn (after a warm-up), reporting event times; returns their total.
template <typename Fn>
double time_cuda(benchmark::State& st, Fn&& fn) {
  EventTimer timer;
  timer.seconds(fn);
  double total = 0;
  for (auto _ : st) {
    const double s = timer.seconds(fn);
    st.SetIterationTime(s);
    total += s;
  }
  return total;
}

// Median seconds of fn over a few runs after a warm-up (for the ceilings).
template <typename Fn>
double median_cuda_seconds(Fn&& fn, int reps = 11) {
  EventTimer timer;
  timer.seconds(fn);
  std::vector<double> t;
  for (int r = 0; r < reps; ++r) t.push_back(timer.seconds(fn));
  std::sort(t.begin(), t.end());
  return t[t.size() / 2];
}

// Device-to-device copy bandwidth moving `bytes` in total (bytes/2 read + bytes/2 written).
double cuda_copy_gbps(size_t bytes) {
  static std::map<size_t, double> cache;
  if (auto it = cache.find(bytes); it != cache.end()) return it->second;
  const size_t half = std::max<size_t>(bytes / 2 / 16 * 16, 16);
  Buffer a(half, Device::CUDA), b(half, Device::CUDA);
  CUDA_CHECK(cudaMemset(a.get(), 0, half));
  const double s = median_cuda_seconds([&] { CUDA_CHECK(cudaMemcpyAsync(b.get(), a.get(), half, cudaMemcpyDeviceToDevice)); });
  return cache[bytes] = gbps(2.0 * half, s);
}

void report_bandwidth(benchmark::State& st, double bytes, double secs) {
  st.counters["GB/s"] = gbps(bytes * st.iterations(), secs);
  st.counters["copy_GB/s"] = cuda_copy_gbps(size_t(bytes));
  st.counters["pct_of_copy"] = 100.0 * st.counters["GB/s"] / st.counters["copy_GB/s"];
}

void BM_cuda_mul(benchmark::State& st) {
  if (!cuda_available()) return st.SkipWithError(cuda_unavailable_reason().c_str());
  Tensor a = randn(abcd(st), 1, 0, Device::CUDA), b = randn(abcd(st), 2, 0, Device::CUDA);
  Tensor out = Tensor::empty(abcd(st), Device::CUDA);
  const double secs = time_cuda(st, [&] { ops::mul_into(out, a, b); });
  report_bandwidth(st, 12.0 * a.numel(), secs);
}
BENCHMARK(BM_cuda_mul)->Apply([](auto* b) { mul_sizes(b, true); })->UseManualTime();

void BM_cuda_sum(benchmark::State& st) {
  if (!cuda_available()) return st.SkipWithError(cuda_unavailable_reason().c_str());
  const Shape s = abcd(st);
  Tensor a = randn(s, 1, 0, Device::CUDA);
  Tensor out = Tensor::empty({s[0], s[1], s[3]}, Device::CUDA);
  const int64_t ws_n = cuda::sum_middle_workspace(s[0] * s[1], s[2], s[3]);
  Tensor ws = Tensor::empty({std::max<int64_t>(ws_n, 1)}, Device::CUDA);
  const double secs = time_cuda(st, [&] {
    cuda::sum_middle(out.data<float>(), a.data<float>(), s[0] * s[1], s[2], s[3], ws.data<float>());
  });
  report_bandwidth(st, 4.0 * (a.numel() + out.numel()), secs);
}
BENCHMARK(BM_cuda_sum)->Apply([](auto* b) { sum_sizes(b, true); })->UseManualTime();

double cublas_tflops(const GemmShape& s, const Tensor& A, const Tensor& B, Tensor& C) {
  const double secs = median_cuda_seconds([&] {
    cuda::gemm_batched_cublas(C.data<float>(), A.data<float>(), B.data<float>(), s);
  });
  return 2e-12 * s.M * s.N * s.K / secs;
}

void BM_cuda_gemm(benchmark::State& st) {
  if (!cuda_available()) return st.SkipWithError(cuda_unavailable_reason().c_str());
  const GemmShape s = course_gemm(st);
  Tensor A = randn({s.M, s.K}, 1, 0, Device::CUDA), B = randn({s.N, s.K}, 2, 0, Device::CUDA);
  Tensor C = Tensor::empty({1, s.M, s.N}, Device::CUDA);
  const double secs = time_cuda(st, [&] { cuda::gemm_batched(C.data<float>(), A.data<float>(), B.data<float>(), s); });
  st.counters["TFLOP/s"] = 2e-12 * s.M * s.N * s.K * st.iterations() / secs;
  st.counters["cublas_TFLOP/s"] = cublas_tflops(s, A, B, C);
  st.counters["pct_of_cublas"] = 100.0 * st.counters["TFLOP/s"] / st.counters["cublas_TFLOP/s"];
}
BENCHMARK(BM_cuda_gemm)->Apply(gemm_sizes)->UseManualTime();

#endif  // HANDGRAD_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
