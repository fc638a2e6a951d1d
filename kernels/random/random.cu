#include "kernels/philox.h"
#include "kernels/common.cuh"
#include "kernels/random/random.h"

namespace handgrad::cuda {

namespace {
__global__ void fill_uniform_kernel(float* out, int64_t n, Philox rng, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = rng.uniform(offset + i);
}
__global__ void fill_normal_kernel(float* out, int64_t n, Philox rng, uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = rng.normal(offset + i);
}
__global__ void fill_uniform_int_kernel(int64_t* out, int64_t n, uint64_t bound, Philox rng,
                                        uint64_t offset) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    out[i] = static_cast<int64_t>(rng.uniform_int(offset + i, bound));
}
}  // namespace

void fill_uniform(float* out, int64_t n, uint64_t seed, uint64_t stream_id, uint64_t offset) {
  if (n == 0) return;
  HG_LAUNCH(grid_for(n), kBlock, 0, stream(), fill_uniform_kernel)(out, n, Philox(seed, stream_id), offset);
  CUDA_CHECK_LAUNCH();
}
void fill_normal(float* out, int64_t n, uint64_t seed, uint64_t stream_id, uint64_t offset) {
  if (n == 0) return;
  HG_LAUNCH(grid_for(n), kBlock, 0, stream(), fill_normal_kernel)(out, n, Philox(seed, stream_id), offset);
  CUDA_CHECK_LAUNCH();
}
void fill_uniform_int(int64_t* out, int64_t n, uint64_t bound, uint64_t seed, uint64_t stream_id,
                      uint64_t offset) {
  if (n == 0) return;
  HG_LAUNCH(grid_for(n), kBlock, 0, stream(), fill_uniform_int_kernel)(out, n, bound,
                                                                Philox(seed, stream_id), offset);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
