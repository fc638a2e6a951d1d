// Kernels with one bug each, for the SIMT emulator's own tests (tests/test_simt.cpp; compiled only
// in a SIMT build). Each launcher returns what cudaGetLastError says after the launch; the tests
// also read the emulator's report. The correct kernels beside them must pass: a checker that
// reports everything is as useless as one that reports nothing.
#include "kernels/common.cuh"

namespace handgrad::cuda::simt_selftest {
namespace {

// --- global memory ------------------------------------------------------------------------------
__global__ void copy_kernel(float* y, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i];
}
__global__ void copy_one_past_kernel(float* y, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i <= n) y[i] = x[i < n ? i : 0];  // bug: i == n writes past y
}
__global__ void read_one_past_kernel(float* y, const float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  if (i < n) y[i] = x[i + 1];  // bug: the last thread reads past x
}
__global__ void every_block_writes_kernel(float* y) {
  if (threadIdx.x == 0) y[0] = float(blockIdx.x);  // bug: blocks are not ordered
}
__global__ void float4_copy_kernel(float* y, const float* x, int offset) {
  *reinterpret_cast<float4*>(y) = *reinterpret_cast<const float4*>(x + offset);  // misaligned unless offset % 4 == 0
}

__global__ void smooth_in_place_kernel(float* x, int n) {
  const int i = blockIdx.x * blockDim.x + threadIdx.x;
  const float v = i + 1 < n ? x[i] + x[i + 1] : x[i];  // bug: x[i + 1] may be another block's x[i]
  __syncthreads();
  x[i] = v;
}

// --- shared memory and barriers -----------------------------------------------------------------
// A block-wide rotation through shared memory; `with_barrier` false drops the __syncthreads.
__global__ void rotate_kernel(float* y, const float* x, bool with_barrier) {
  __shared__ float tile[128];
  const int t = threadIdx.x, n = blockDim.x;
  tile[t] = x[blockIdx.x * n + t];
  if (with_barrier) __syncthreads();
  y[blockIdx.x * n + t] = tile[(t + 1) % n];
}
__global__ void read_neighbour_kernel(float* y, const float* x) {
  __shared__ float tile[128];
  const int t = threadIdx.x;
  tile[t] = x[t];
  y[t] = t > 0 ? tile[t - 1] : 0.f;  // bug: thread t-1's write is not yet visible (no barrier)
}
__global__ void overwrite_before_read_kernel(float* y, const float* x) {
  __shared__ float tile[128];
  const int t = threadIdx.x, n = blockDim.x;
  tile[t] = x[t];
  __syncthreads();
  const float v = tile[(t + 1) % n];
  tile[t] = 2 * v;  // bug: a neighbour may still have to read the old tile[t] (needs a barrier first)
  y[t] = v;
}
__global__ void many_readers_then_write_kernel(float* y) {
  __shared__ float cell;
  if (threadIdx.x == 0) cell = 1.f;
  __syncthreads();
  const float v = cell;                // every thread reads it
  if (threadIdx.x == 5) cell = 2.f;    // bug: thread 5 overwrites what the others may still read
  y[threadIdx.x] = v;
}
// A transpose through shared memory in a 2D block (8 x 4 threads, 4 x 8 tile): threadIdx.y matters.
__global__ void transpose_2d_kernel(float* y, const float* x) {
  __shared__ float tile[4][8];
  tile[threadIdx.y][threadIdx.x] = x[threadIdx.y * 8 + threadIdx.x];
  __syncthreads();
  const int t = threadIdx.y * 8 + threadIdx.x, r = t % 4, c = t / 4;  // y is 8 x 4
  y[c * 4 + r] = tile[r][c];
}
__global__ void read_unwritten_shared_kernel(float* y) {
  __shared__ float tile[64];
  if (threadIdx.x < 32) tile[threadIdx.x] = 1.f;
  __syncthreads();
  y[threadIdx.x] = tile[threadIdx.x];  // bug: threads 32..63 read what no thread of this block wrote
}
__global__ void barrier_in_branch_kernel(float* y) {
  if (threadIdx.x < 16) __syncthreads();  // bug: threads 16.. never reach it
  y[threadIdx.x] = 1.f;
}
__global__ void two_barriers_kernel(float* y) {
  if (threadIdx.x % 2) {
    __syncthreads();  // bug: odd and even threads wait at different barriers
  } else {
    __syncthreads();
  }
  y[threadIdx.x] = 1.f;
}
__global__ void shared_one_short_kernel(float* y) {
  __shared__ float tile[31];  // bug: one row short of the 32 threads
  tile[threadIdx.x] = float(threadIdx.x);
  __syncthreads();
  y[threadIdx.x] = tile[31 - threadIdx.x];
}
__global__ void another_threads_local_kernel(float* y) {
  __shared__ float* where;
  float mine = float(threadIdx.x);
  if (threadIdx.x == 0) where = &mine;
  __syncthreads();
  if (threadIdx.x == 1) y[0] = *where;  // bug: thread 0's local variable
  __syncthreads();
}
__global__ void dynamic_shared_kernel(float* y, int n) {
  HG_EXTERN_SHARED(float, buf);
  for (int i = threadIdx.x; i < n; i += blockDim.x) buf[i] = float(i % 8);
  __syncthreads();
  float s = 0;
  for (int i = 0; i < n; ++i) s += buf[i];
  y[threadIdx.x] = s;
}

// --- warps ----------------------------------------------------------------------------------------
__global__ void warp_sum_kernel(float* y, const float* x) {
  float v = x[blockIdx.x * blockDim.x + threadIdx.x];
  for (int m = 16; m > 0; m /= 2) v += __shfl_xor_sync(0xffffffffu, v, m);
  y[blockIdx.x * blockDim.x + threadIdx.x] = v;
}
// Butterfly over segments of 16 lanes with a lane mask of 16: lanes 16..31 read lanes 0..15 (an
// earlier segment), lanes 0..15 get their own value back (their partner is in a later one).
__global__ void shuffle_width_kernel(float* y) {
  y[threadIdx.x] = __shfl_xor_sync(0xffffffffu, float(threadIdx.x), 16, 16);
}
__global__ void shuffle_in_branch_kernel(float* y) {
  float v = float(threadIdx.x);
  if (threadIdx.x % 32 < 16) v = __shfl_xor_sync(0xffffffffu, v, 1);  // bug: half the mask never comes
  y[threadIdx.x] = v;
}

}  // namespace

#define HG_SELFTEST_RUN(grid, block, smem, kernel, ...) \
  (cudaGetLastError(), HG_LAUNCH(grid, block, smem, nullptr, kernel)(__VA_ARGS__), cudaGetLastError())

cudaError_t copy(float* y, const float* x, int n) { return HG_SELFTEST_RUN((n + 63) / 64, 64, 0, copy_kernel, y, x, n); }
cudaError_t copy_one_past(float* y, const float* x, int n) {
  return HG_SELFTEST_RUN((n + 64) / 64, 64, 0, copy_one_past_kernel, y, x, n);
}
cudaError_t read_one_past(float* y, const float* x, int n) {
  return HG_SELFTEST_RUN((n + 63) / 64, 64, 0, read_one_past_kernel, y, x, n);
}
cudaError_t every_block_writes(float* y) { return HG_SELFTEST_RUN(2, 32, 0, every_block_writes_kernel, y); }
cudaError_t float4_copy(float* y, const float* x, int offset) {
  return HG_SELFTEST_RUN(1, 1, 0, float4_copy_kernel, y, x, offset);
}
cudaError_t smooth_in_place(float* x, int n) { return HG_SELFTEST_RUN((n + 63) / 64, 64, 0, smooth_in_place_kernel, x, n); }
cudaError_t many_readers_then_write(float* y) { return HG_SELFTEST_RUN(1, 32, 0, many_readers_then_write_kernel, y); }
cudaError_t transpose_2d(float* y, const float* x) { return HG_SELFTEST_RUN(1, dim3(8, 4), 0, transpose_2d_kernel, y, x); }
cudaError_t shuffle_width(float* y) { return HG_SELFTEST_RUN(1, 32, 0, shuffle_width_kernel, y); }
cudaError_t rotate(float* y, const float* x, int blocks, int threads, bool with_barrier) {
  return HG_SELFTEST_RUN(blocks, threads, 0, rotate_kernel, y, x, with_barrier);
}
cudaError_t read_neighbour(float* y, const float* x) { return HG_SELFTEST_RUN(1, 128, 0, read_neighbour_kernel, y, x); }
cudaError_t overwrite_before_read(float* y, const float* x) {
  return HG_SELFTEST_RUN(1, 128, 0, overwrite_before_read_kernel, y, x);
}
cudaError_t read_unwritten_shared(float* y) { return HG_SELFTEST_RUN(1, 64, 0, read_unwritten_shared_kernel, y); }
cudaError_t barrier_in_branch(float* y) { return HG_SELFTEST_RUN(1, 64, 0, barrier_in_branch_kernel, y); }
cudaError_t two_barriers(float* y) { return HG_SELFTEST_RUN(1, 64, 0, two_barriers_kernel, y); }
cudaError_t shared_one_short(float* y) { return HG_SELFTEST_RUN(1, 32, 0, shared_one_short_kernel, y); }
cudaError_t another_threads_local(float* y) { return HG_SELFTEST_RUN(1, 32, 0, another_threads_local_kernel, y); }
cudaError_t dynamic_shared(float* y, int n, int threads, size_t smem) {
  return HG_SELFTEST_RUN(1, threads, smem, dynamic_shared_kernel, y, n);
}
cudaError_t allow_dynamic_shared(int bytes) {
  return cudaFuncSetAttribute(dynamic_shared_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
}
cudaError_t warp_sum(float* y, const float* x, int blocks, int threads) {
  return HG_SELFTEST_RUN(blocks, threads, 0, warp_sum_kernel, y, x);
}
cudaError_t shuffle_in_branch(float* y) { return HG_SELFTEST_RUN(1, 32, 0, shuffle_in_branch_kernel, y); }
cudaError_t copy_with_shape(float* y, const float* x, int n, dim3 grid, dim3 block) {
  return HG_SELFTEST_RUN(grid, block, 0, copy_kernel, y, x, n);
}

}  // namespace handgrad::cuda::simt_selftest
