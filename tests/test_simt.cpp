// The SIMT emulator's own tests (SIMT builds only): each bug of tests/simt_bad_kernels.cu must be
// reported, as the error a GPU would return and one line that says what and where, and the correct
// kernels beside them must run clean and compute the right thing.
#include <gtest/gtest.h>

#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/simt/simt_runtime.h"

namespace handgrad::cuda::simt_selftest {
cudaError_t copy(float* y, const float* x, int n);
cudaError_t copy_one_past(float* y, const float* x, int n);
cudaError_t read_one_past(float* y, const float* x, int n);
cudaError_t every_block_writes(float* y);
cudaError_t float4_copy(float* y, const float* x, int offset);
cudaError_t read_neighbour(float* y, const float* x);
cudaError_t rotate(float* y, const float* x, int blocks, int threads, bool with_barrier);
cudaError_t overwrite_before_read(float* y, const float* x);
cudaError_t read_unwritten_shared(float* y);
cudaError_t barrier_in_branch(float* y);
cudaError_t two_barriers(float* y);
cudaError_t shared_one_short(float* y);
cudaError_t another_threads_local(float* y);
cudaError_t dynamic_shared(float* y, int n, int threads, size_t smem);
cudaError_t allow_dynamic_shared(int bytes);
cudaError_t warp_sum(float* y, const float* x, int blocks, int threads);
cudaError_t shuffle_in_branch(float* y);
cudaError_t copy_with_shape(float* y, const float* x, int n, dim3 grid, dim3 block);
cudaError_t smooth_in_place(float* x, int n);
cudaError_t many_readers_then_write(float* y);
cudaError_t transpose_2d(float* y, const float* x);
cudaError_t shuffle_width(float* y);
}  // namespace handgrad::cuda::simt_selftest

namespace {
namespace k = handgrad::cuda::simt_selftest;
using handgrad::simt::last_violation;

// An exact-size device buffer holding `host` (or n NaNs).
struct DeviceFloats {
  float* p = nullptr;
  size_t n = 0;
  explicit DeviceFloats(size_t count) : n(count) {
    EXPECT_EQ(cudaMalloc(reinterpret_cast<void**>(&p), n * sizeof(float)), cudaSuccess);
    std::vector<float> nan(n, NAN);
    EXPECT_EQ(cudaMemcpy(p, nan.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
  explicit DeviceFloats(const std::vector<float>& host) : DeviceFloats(host.size()) {
    EXPECT_EQ(cudaMemcpy(p, host.data(), n * sizeof(float), cudaMemcpyHostToDevice), cudaSuccess);
  }
  DeviceFloats(const DeviceFloats&) = delete;
  DeviceFloats& operator=(const DeviceFloats&) = delete;
  ~DeviceFloats() { cudaFree(p); }
  std::vector<float> host() const {
    std::vector<float> h(n);
    EXPECT_EQ(cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
    return h;
  }
};

std::vector<float> iota(size_t n) {
  std::vector<float> v(n);
  std::iota(v.begin(), v.end(), 1.f);
  return v;
}

// rotate(..., with_barrier = true) over `blocks` blocks of 128 threads: each block's x, rotated by one.
void expect_rotated(const std::vector<float>& r, int blocks) {
  for (int b = 0; b < blocks; ++b)
    for (int t = 0; t < 128; ++t) EXPECT_EQ(r[b * 128 + t], float(b * 128 + (t + 1) % 128 + 1)) << b << "," << t;
}

// The launch failed with `err` and the report names `what` (and the kernel).
#define EXPECT_REPORTED(call, err, what, kernel)                            \
  do {                                                                      \
    EXPECT_EQ((call), err);                                                 \
    EXPECT_NE(last_violation().find(what), std::string::npos) << last_violation(); \
    EXPECT_NE(last_violation().find(kernel), std::string::npos) << last_violation(); \
  } while (0)

TEST(Simt, CorrectKernelsRunCleanAndRight) {
  const int n = 1000;  // a tail: 16 blocks of 64, the last one part idle
  DeviceFloats x(iota(n)), y(n);
  ASSERT_EQ(k::copy(y.p, x.p, n), cudaSuccess) << last_violation();
  EXPECT_EQ(y.host(), iota(n));
  EXPECT_EQ(last_violation(), "");

  // Shared memory through barriers, over several blocks that reuse the same __shared__ tile.
  DeviceFloats rx(iota(3 * 128)), ry(3 * 128);
  ASSERT_EQ(k::rotate(ry.p, rx.p, 3, 128, true), cudaSuccess) << last_violation();
  expect_rotated(ry.host(), 3);

  // Warp shuffles: a butterfly sum over each warp of a 96-thread block.
  DeviceFloats wx(iota(2 * 96)), wy(2 * 96);
  ASSERT_EQ(k::warp_sum(wy.p, wx.p, 2, 96), cudaSuccess) << last_violation();
  const std::vector<float> w = wy.host(), in = iota(2 * 96);
  for (int warp = 0; warp < 6; ++warp) {
    const float want = std::accumulate(in.begin() + warp * 32, in.begin() + warp * 32 + 32, 0.f);
    for (int lane = 0; lane < 32; ++lane) EXPECT_EQ(w[warp * 32 + lane], want) << "warp " << warp;
  }

  // A 2D block: threadIdx.y, the barrier and the shared tile.
  DeviceFloats tx(iota(32)), ty(32);
  ASSERT_EQ(k::transpose_2d(ty.p, tx.p), cudaSuccess) << last_violation();
  const std::vector<float> t = ty.host(), tin = iota(32);
  for (int r = 0; r < 4; ++r)
    for (int c = 0; c < 8; ++c) EXPECT_EQ(t[c * 4 + r], tin[r * 8 + c]) << r << "," << c;

  // __shfl_xor_sync's width: a later segment gives the lane its own value, an earlier one does not.
  DeviceFloats sy(32);
  ASSERT_EQ(k::shuffle_width(sy.p), cudaSuccess) << last_violation();
  const std::vector<float> sh = sy.host();
  for (int lane = 0; lane < 32; ++lane) EXPECT_EQ(sh[lane], float(lane < 16 ? lane : lane - 16)) << "lane " << lane;

  // An aligned float4.
  DeviceFloats fx(iota(8)), fy(4);
  ASSERT_EQ(k::float4_copy(fy.p, fx.p, 4), cudaSuccess) << last_violation();
  EXPECT_EQ(fy.host(), std::vector<float>({5, 6, 7, 8}));
}

TEST(Simt, OutOfBoundsGlobalAccesses) {
  const int n = 100;
  DeviceFloats x(iota(n)), y(n);
  EXPECT_REPORTED(k::copy_one_past(y.p, x.p, n), cudaErrorIllegalAddress, "write of 4 bytes at offset 400 of a device allocation of 400 bytes: 4 bytes past its end", "copy_one_past_kernel");
  EXPECT_NE(last_violation().find("block (1,0,0) thread (36,0,0)"), std::string::npos) << last_violation();
  EXPECT_REPORTED(k::read_one_past(y.p, x.p, n), cudaErrorIllegalAddress, "read of 4 bytes at offset 400", "read_one_past_kernel");
  // After a violation the emulator runs the next launch normally.
  DeviceFloats y2(n);
  EXPECT_EQ(k::copy(y2.p, x.p, n), cudaSuccess) << last_violation();
  EXPECT_EQ(y2.host(), iota(n));
}

TEST(Simt, BlocksWritingOneWordRace) {
  DeviceFloats y(1);
  EXPECT_REPORTED(k::every_block_writes(y.p), cudaErrorLaunchFailure, "write-after-write race on a device allocation of 4 bytes at offset 0 with thread (0,0,0) of another block", "every_block_writes_kernel");
}

TEST(Simt, ReadInOneBlockWrittenInAnotherRaces) {
  // Block 0's last thread reads x[64], block 1's first thread reads and then writes it: on a GPU
  // the result depends on which block runs first. Blocks run in order here, so only the shadow
  // record of block 0's read can tell (a later read by block 1 must not replace it).
  DeviceFloats x(iota(128));
  EXPECT_REPORTED(k::smooth_in_place(x.p, 128), cudaErrorLaunchFailure, "write-after-read race on a device allocation of 512 bytes at offset 256 with thread (63,0,0) of another block", "smooth_in_place_kernel");
}

TEST(Simt, MisalignedFloat4) {
  DeviceFloats x(iota(8)), y(4);
  EXPECT_REPORTED(k::float4_copy(y.p, x.p, 1), cudaErrorMisalignedAddress, "misaligned read of 16 bytes at offset 4", "float4_copy_kernel");
}

TEST(Simt, SharedMemoryRacesWithoutBarrier) {
  DeviceFloats x(iota(128)), y(128);
  // Threads run in order between barriers: thread 0 reads tile[1] before thread 1 wrote it.
  EXPECT_REPORTED(k::rotate(y.p, x.p, 1, 128, false), cudaErrorLaunchFailure, "read of __shared__ simt_selftest::rotate_kernel::tile (512 bytes) at offset 4, which no thread of this block has written", "rotate_kernel");
  // Thread 1 reads tile[0], which thread 0 wrote with no barrier between.
  EXPECT_REPORTED(k::read_neighbour(y.p, x.p), cudaErrorLaunchFailure, "read-after-write race on __shared__ simt_selftest::read_neighbour_kernel::tile (512 bytes) at offset 0 with thread (0,0,0) (no __syncthreads between them)", "read_neighbour_kernel");
  // Thread 1 overwrites tile[1] that thread 0 read in the same interval.
  EXPECT_REPORTED(k::overwrite_before_read(y.p, x.p), cudaErrorLaunchFailure, "write-after-read race on __shared__ simt_selftest::overwrite_before_read_kernel::tile (512 bytes) at offset 4 with thread (0,0,0)", "overwrite_before_read_kernel");
  // A write after reads by several threads names them all.
  DeviceFloats m(32);
  EXPECT_REPORTED(k::many_readers_then_write(m.p), cudaErrorLaunchFailure, "write-after-read race on __shared__ simt_selftest::many_readers_then_write_kernel::cell (4 bytes) at offset 0 with other threads", "many_readers_then_write_kernel");
  // Those launches were abandoned with threads waiting at a barrier: the next one, with barriers
  // over several blocks, runs on recycled fibers and computes the right thing.
  DeviceFloats rx(iota(2 * 128)), ry(2 * 128);
  ASSERT_EQ(k::rotate(ry.p, rx.p, 2, 128, true), cudaSuccess) << last_violation();
  expect_rotated(ry.host(), 2);
}

TEST(Simt, SharedMemoryReadBeforeWritten) {
  DeviceFloats y(64);
  EXPECT_REPORTED(k::read_unwritten_shared(y.p), cudaErrorLaunchFailure, "at offset 128, which no thread of this block has written", "read_unwritten_shared_kernel");
}

TEST(Simt, SharedArrayOneShort) {
  DeviceFloats y(32);
  EXPECT_REPORTED(k::shared_one_short(y.p), cudaErrorIllegalAddress, "write of 4 bytes at offset 124 of __shared__ simt_selftest::shared_one_short_kernel::tile (124 bytes): 4 bytes past its end", "shared_one_short_kernel");
}

TEST(Simt, BarrierDivergenceIsReportedNotHung) {
  DeviceFloats y(64);
  EXPECT_REPORTED(k::barrier_in_branch(y.p), cudaErrorLaunchFailure, "barrier divergence: 16 threads wait at __syncthreads", "barrier_in_branch_kernel");
  EXPECT_REPORTED(k::two_barriers(y.p), cudaErrorLaunchFailure, "barrier divergence", "two_barriers_kernel");
  EXPECT_NE(last_violation().find("at another"), std::string::npos) << last_violation();
}

// Lanes of the mask that exit before a shuffle: undefined in CUDA's programming guide (on sm_70+
// the shuffle completes among the lanes left), reported here.
TEST(Simt, ShuffleWithExitedLanesIsReported) {
  DeviceFloats y(32);
  EXPECT_REPORTED(k::shuffle_in_branch(y.p), cudaErrorLaunchFailure, "__shfl_xor_sync waits for lane 16, which has exited", "shuffle_in_branch_kernel");
}

TEST(Simt, AnotherThreadsLocalMemory) {
  DeviceFloats y(1);
  EXPECT_REPORTED(k::another_threads_local(y.p), cudaErrorIllegalAddress, "another thread's local memory", "another_threads_local_kernel");
}

TEST(Simt, LaunchShapesAGpuRefuses) {
  DeviceFloats x(iota(4)), y(4);
  EXPECT_EQ(k::copy_with_shape(y.p, x.p, 4, dim3(1), dim3(1025)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(k::copy_with_shape(y.p, x.p, 4, dim3(1), dim3(1, 1, 65)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(k::copy_with_shape(y.p, x.p, 4, dim3(1, 65536), dim3(32)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(k::copy_with_shape(y.p, x.p, 4, dim3(1, 1, 65536), dim3(32)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(k::copy_with_shape(y.p, x.p, 4, dim3(0), dim3(32)), cudaErrorInvalidConfiguration);
  EXPECT_EQ(k::copy_with_shape(y.p, x.p, 4, dim3(1), dim3(1024)), cudaSuccess) << last_violation();
  EXPECT_EQ(y.host(), iota(4));
}

TEST(Simt, DynamicSharedMemoryLimits) {
  const int n = 48 * 1024 / 4 + 1;  // one float over 48 KB
  DeviceFloats y(64);
  ASSERT_EQ(k::allow_dynamic_shared(48 * 1024), cudaSuccess);  // the default (--gtest_repeat runs this again)
  EXPECT_EQ(k::dynamic_shared(y.p, n, 64, n * sizeof(float)), cudaErrorInvalidValue);
  EXPECT_EQ(k::allow_dynamic_shared(handgrad::simt::kSharedPerBlockOptin + 1), cudaErrorInvalidValue);
  ASSERT_EQ(k::allow_dynamic_shared(n * sizeof(float)), cudaSuccess);
  ASSERT_EQ(k::dynamic_shared(y.p, n, 64, n * sizeof(float)), cudaSuccess) << last_violation();
  float want = 0;
  for (int i = 0; i < n; ++i) want += float(i % 8);  // exact in float
  for (float v : y.host()) EXPECT_EQ(v, want);
  // One float more than the launch asked for is read past the dynamic shared memory.
  EXPECT_REPORTED(k::dynamic_shared(y.p, n, 64, (n - 1) * sizeof(float)), cudaErrorIllegalAddress, "write of 4 bytes at offset 49152 of the dynamic shared memory (49152 bytes): 4 bytes past its end", "dynamic_shared_kernel");
}

TEST(Simt, DeviceMemoryApiChecksItsRanges) {
  DeviceFloats x(4);
  std::vector<float> h(5);
  EXPECT_NE(cudaMemcpy(h.data(), x.p, 5 * sizeof(float), cudaMemcpyDeviceToHost), cudaSuccess);
  EXPECT_NE(cudaMemset(x.p + 1, 0, 4 * sizeof(float)), cudaSuccess);
  EXPECT_EQ(cudaMemset(x.p + 1, 0, 3 * sizeof(float)), cudaSuccess);
  EXPECT_NE(cudaFree(x.p + 1), cudaSuccess);
  cudaGetLastError();
}

}  // namespace
