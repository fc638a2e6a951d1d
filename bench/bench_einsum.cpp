// Benchmarks of the three course contractions, CPU and CUDA, each next to a ceiling measured
// in the same run, and of a many-operand equation (the contraction order). Ceilings: for the
// memory-bound ops on the CPU, the simplest loop that moves the same bytes in the same pattern
// over the kernel's own buffers (cache-resident or not, as the kernel's are: out = a + b for the
// product, a plain sum of every input element for the reduction); on the GPU, device-to-device
// copy bandwidth; cuBLAS SGEMM for the GEMM. Counters: GB/s (bytes the op must move), TFLOP/s,
// and pct_of_copy / pct_of_cublas. CUDA timings are CUDA-event times (manual time).
//
//   build/bench/bench_einsum --benchmark_filter=cuda     (GPU only)
//   build/bench/bench_einsum --benchmark_filter=cpu      (CPU only)
#include <benchmark/benchmark.h>

#include <omp.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>

#include "host/einsum.h"
#include "host/einsum_ops.h"
#include "host/random.h"
#include "kernels/cpu_parallel.h"
#include "kernels/einsum/elementwise.h"
#include "kernels/einsum/gemm.h"
#include "kernels/einsum/reduce.h"
#include "kernels/philox.h"
#include "kernels/random/random.h"
#ifdef HANDGRAD_WITH_OPENBLAS
#include <cblas.h>
#endif
#ifdef HANDGRAD_WITH_CUDA
#include <cuda_runtime.h>

#include "kernels/cuda_check.h"
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
// The best GB/s (`bytes` per run) of at least `runs` back-to-back runs of stream(), timed for
// at least `at_least`. A ceiling's stream() is the simplest loop with the kernel's access
// pattern, on the kernel's own buffers, on all OpenMP threads as the kernels use.
template <typename Stream>
double best_stream_gbps(double bytes, Stream&& stream, int runs, std::chrono::milliseconds at_least) {
  using clock = std::chrono::steady_clock;
  double best = 0;
  const auto until = clock::now() + at_least;
  for (int r = 0; r < runs || clock::now() < until; ++r) {
    const auto t0 = clock::now();
    stream();
    best = std::max(best, gbps(bytes, std::chrono::duration<double>(clock::now() - t0).count()));
  }
  return best;
}

HG_VECTOR_CLONES void add_range(float* __restrict out, const float* __restrict a, const float* __restrict b, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i) out[i] = a[i] + b[i];
}
#if defined(__x86_64__)
__attribute__((target("avx"))) void add_range_streaming(float* __restrict out, const float* __restrict a,
                                                         const float* __restrict b, int64_t n) {
  int64_t i = 0;
  for (; i < n && reinterpret_cast<uintptr_t>(out + i) % 32 != 0; ++i) out[i] = a[i] + b[i];
  for (; i + 8 <= n; i += 8) _mm256_stream_ps(out + i, _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i)));
  for (; i < n; ++i) out[i] = a[i] + b[i];
  _mm_sfence();
}
#endif
// A plain sum with 64 independent lanes, built for AVX2 and (x86) AVX-512: the sum ceiling is the
// faster of the two, as the kernel's row sums run either (on the Zen 5 here this loop streams
// faster as AVX2 code, the kernel's row sums as AVX-512).
[[gnu::always_inline]] inline float sum_range_body(const float* __restrict x, int64_t n) {
  float acc[64] = {};
  int64_t i = 0;
  for (; i + 64 <= n; i += 64)
#pragma omp simd
    for (int j = 0; j < 64; ++j) acc[j] += x[i + j];
  for (; i < n; ++i) acc[0] += x[i];
  float s = 0;
  for (float v : acc) s += v;
  return s;
}
#if defined(__x86_64__)
__attribute__((target("arch=x86-64-v3"))) float sum_range_avx2(const float* x, int64_t n) { return sum_range_body(x, n); }
__attribute__((target("arch=x86-64-v4"))) float sum_range_avx512(const float* x, int64_t n) { return sum_range_body(x, n); }
#endif

// Runs the benchmark loop over fn and returns the total wall seconds it took.
template <typename Fn>
double time_cpu(benchmark::State& st, Fn&& fn) {
  const auto t0 = std::chrono::steady_clock::now();
  for (auto _ : st) fn();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Runs the memory-bound fn in the benchmark loop and reports its GB/s (`bytes` per call) against
// a ceiling: the best that ceiling(runs, at_least) (best_stream_gbps over the ceiling's loops)
// finds before the kernel, after it, and in short samples every ~20 ms of the kernel's timing,
// the clock paused. The bandwidth on offer on a shared VM drifts within one benchmark, and the
// row sums run at the ceiling loop's own speed: against a ceiling taken only before and after,
// they once measured 100.25%. Before and after, the ceiling warms for 25 ms and times for 25 ms:
// a working set at the L3's size (the 33.5 MB sums) reaches its steady share of the cache only
// after some passes.
template <typename Fn, typename Ceiling>
void time_against_ceiling(benchmark::State& st, double bytes, Fn&& fn, Ceiling&& ceiling) {
  using clock = std::chrono::steady_clock;
  using std::chrono::milliseconds;
  const auto settled = [&] {
    ceiling(1, milliseconds(25));
    return ceiling(20, milliseconds(25));
  };
  double best = settled(), secs = 0;
  int64_t calls = 0;
  auto t0 = clock::now();
  for (auto _ : st) {
    fn();
    if (++calls % 16 == 0 && clock::now() - t0 > milliseconds(20)) {
      secs += std::chrono::duration<double>(clock::now() - t0).count();
      st.PauseTiming();
      best = std::max(best, ceiling(3, milliseconds(0)));
      st.ResumeTiming();
      t0 = clock::now();
    }
  }
  secs += std::chrono::duration<double>(clock::now() - t0).count();
  best = std::max(best, settled());
  st.counters["GB/s"] = gbps(bytes * st.iterations(), secs);
  st.counters["copy_GB/s"] = best;
  st.counters["pct_of_copy"] = 100.0 * st.counters["GB/s"] / best;
}

void BM_cpu_mul(benchmark::State& st) {
  Tensor a = randn(abcd(st), 1), b = randn(abcd(st), 2), out = Tensor::empty(abcd(st));
  const int64_t n = a.numel();
  float* o = out.data<float>();
  const float* x = a.data<float>();
  const float* y = b.data<float>();
  // The faster of two ways to stream a + b into out: ordinary stores, and (x86) non-temporal
  // ones that skip reading the output into the cache first, as the kernel does for large outputs.
  const auto ceiling = [&](int runs, std::chrono::milliseconds at_least) {
    double best = best_stream_gbps(12.0 * n, [&] {
      cpu::parallel_ranges(n, 1 << 15, [&](int64_t lo, int64_t hi) { add_range(o + lo, x + lo, y + lo, hi - lo); });
    }, runs, at_least);
#if defined(__x86_64__)
    if (__builtin_cpu_supports("avx")) best = std::max(best, best_stream_gbps(12.0 * n, [&] {
      cpu::parallel_ranges(n, 1 << 15, [&](int64_t lo, int64_t hi) { add_range_streaming(o + lo, x + lo, y + lo, hi - lo); });
    }, runs, at_least));
#endif
    return best;
  };
  time_against_ceiling(st, 12.0 * n, [&] { ops::mul_into(out, a, b); }, ceiling);
}
BENCHMARK(BM_cpu_mul)->Apply([](auto* b) { mul_sizes(b, false); })->UseRealTime();

void BM_cpu_sum(benchmark::State& st) {
  Tensor a = randn(abcd(st), 1);
  const Shape s = abcd(st);
  Tensor out = Tensor::empty({s[0], s[1], s[3]});
  const double bytes = 4.0 * (a.numel() + out.numel());
  float partial[256] = {};  // one per thread
  const auto ceiling = [&](int runs, std::chrono::milliseconds at_least) {
    const auto stream_with = [&](float (*sum_range)(const float*, int64_t)) {
      return best_stream_gbps(bytes, [&] {
        cpu::parallel_ranges(a.numel(), 1 << 15, [&](int64_t lo, int64_t hi) {
          partial[omp_get_thread_num() % 256] += sum_range(a.data<float>() + lo, hi - lo);
        });
        benchmark::DoNotOptimize(partial);
      }, runs, at_least);
    };
#if defined(__x86_64__)
    double best = __builtin_cpu_supports("x86-64-v3") ? stream_with(sum_range_avx2) : 0.0;
    if (__builtin_cpu_supports("x86-64-v4")) best = std::max(best, stream_with(sum_range_avx512));
    if (best > 0) return best;
#endif
    return stream_with([](const float* x, int64_t n) { return sum_range_body(x, n); });
  };
  time_against_ceiling(st, bytes, [&] { ops::sum_middle_into(out, a, s[0] * s[1], s[2], s[3]); }, ceiling);
}
BENCHMARK(BM_cpu_sum)->Apply([](auto* b) { sum_sizes(b, false); })->UseRealTime();

// A many-operand equation where the order is everything: 'ij,jk,kl,lm,mn->in' with i=k=l=n=N,
// j=m=S. Left to right: an N^3 GEMM; the chosen order: four thin ones. The whole einsum() call
// is timed (planning, intermediates from the caching allocator, the output).
const char* const kChain = "ij,jk,kl,lm,mn->in";
std::vector<Tensor> chain_operands(const benchmark::State& st, Device dev) {
  const int64_t N = st.range(0), S = st.range(1);
  std::vector<Tensor> t;
  const Shape shapes[5] = {{N, S}, {S, N}, {N, N}, {N, S}, {S, N}};
  for (int i = 0; i < 5; ++i) t.push_back(randn(shapes[i], 10 + i, 0, dev));
  return t;
}
void chain_sizes(benchmark::internal::Benchmark* b) {
  b->ArgNames({"n", "s"});
  b->Args({4096, 2});
}

void BM_cpu_chain(benchmark::State& st) {
  std::vector<Tensor> t = chain_operands(st, Device::CPU);
  const std::vector<const Tensor*> p{&t[0], &t[1], &t[2], &t[3], &t[4]};
  time_cpu(st, [&] { benchmark::DoNotOptimize(einsum(kChain, p)); });
}
BENCHMARK(BM_cpu_chain)->Apply(chain_sizes)->UseRealTime()->Unit(benchmark::kMillisecond);

// The contraction-order planner alone (no kernels): a random problem of n operands over 52
// labels of sizes 2..9, each operand 2..4 labels, half the once-held labels in the output.
// Exact search up to kEinsumOptimalMaxOperands operands, the greedy orders beyond.
void BM_plan_order(benchmark::State& st) {
  const int n = static_cast<int>(st.range(0));
  const Philox rng(2024, static_cast<uint64_t>(n));
  uint64_t draw = 0;
  std::vector<std::vector<int>> inputs(n);
  std::map<int, int64_t> size;
  std::map<int, int> held;
  for (int l = 0; l < 52; ++l) size[l] = 2 + static_cast<int64_t>(rng.uniform_int(draw++, 8));
  for (auto& in : inputs) {
    std::set<int> labels;
    for (int k = 2 + static_cast<int>(rng.uniform_int(draw++, 3)); k > 0; --k)
      labels.insert(static_cast<int>(rng.uniform_int(draw++, 52)));
    in.assign(labels.begin(), labels.end());
    for (int l : labels) ++held[l];
  }
  std::vector<int> output;
  for (auto [l, c] : held)
    if (c == 1 && rng.uniform_int(draw++, 2)) output.push_back(l);
  std::string method;
  for (auto _ : st) method = plan_einsum_order(inputs, output, size, EinsumOrder::Auto).method;
  st.SetLabel(method);
}
BENCHMARK(BM_plan_order)->Arg(10)->Arg(12)->Arg(13)->Arg(14)->Arg(16)->Arg(32)->Arg(52)->Arg(1000)->Unit(benchmark::kMillisecond);

void BM_cpu_gemm(benchmark::State& st) {
  const GemmShape s = course_gemm(st);
  if (s.M * s.N * s.K > (int64_t(1) << 34)) return st.SkipWithError("too large for the CPU");
  Tensor A = randn({s.M, s.K}, 1), B = randn({s.N, s.K}, 2), C = Tensor::empty({1, s.M, s.N});
  const double secs = time_cpu(st, [&] { ops::gemm_batched_into(C, A, B, s); });
  st.counters["TFLOP/s"] = 2e-12 * s.M * s.N * s.K * st.iterations() / secs;
#ifdef HANDGRAD_WITH_OPENBLAS
  // A peer, not a ceiling: OpenBLAS's own threaded call on the same buffers (the library below
  // 4096 multiply-adds; above, oneDNN's sgemm when built with it). vs_openblas > 1: faster.
  const auto openblas = [&] {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<blasint>(s.M), static_cast<blasint>(s.N),
                static_cast<blasint>(s.K), 1.0f, A.data<float>(), static_cast<blasint>(s.lda), B.data<float>(),
                static_cast<blasint>(s.ldb), 0.0f, C.data<float>(), static_cast<blasint>(s.N));
  };
  openblas();
  const int reps = static_cast<int>(std::max<int64_t>(1, st.iterations() / 4));
  const auto t0 = std::chrono::steady_clock::now();
  for (int r = 0; r < reps; ++r) openblas();
  const double openblas_secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  st.counters["vs_openblas"] = openblas_secs / (secs / st.iterations());
#endif
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

void BM_cuda_chain(benchmark::State& st) {
  if (!cuda_available()) return st.SkipWithError(cuda_unavailable_reason().c_str());
  std::vector<Tensor> t = chain_operands(st, Device::CUDA);
  const std::vector<const Tensor*> p{&t[0], &t[1], &t[2], &t[3], &t[4]};
  time_cuda(st, [&] { benchmark::DoNotOptimize(einsum(kChain, p)); });
}
BENCHMARK(BM_cuda_chain)->Apply(chain_sizes)->UseManualTime()->Unit(benchmark::kMillisecond);

#endif  // HANDGRAD_WITH_CUDA

}  // namespace

BENCHMARK_MAIN();
