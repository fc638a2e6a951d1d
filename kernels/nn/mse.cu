#include "kernels/common.cuh"
#include "kernels/nn/mse.h"

namespace handgrad::cuda {

namespace {
__global__ void mse_loss_grad_kernel(float* __restrict__ loss_log, int64_t log_stride,
                                     const int64_t* step, float* __restrict__ dyhat,
                                     const float* __restrict__ yhat, RowSource target, int64_t models) {
  const int64_t m = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  if (m >= models) return;
  const float diff = yhat[m] - target.row(m)[0];
  loss_log[m * log_stride + *step] = diff * diff;
  dyhat[m] = 2.f * diff;
}
}  // namespace

void mse_loss_grad(float* loss_log, int64_t log_stride, const int64_t* step, float* dyhat,
                   const float* yhat, RowSource target, int64_t models) {
  if (models == 0) return;
  HG_LAUNCH(grid_for(models), kBlock, 0, stream(), mse_loss_grad_kernel)(loss_log, log_stride, step, dyhat,
                                                                  yhat, target, models);
  CUDA_CHECK_LAUNCH();
}

}  // namespace handgrad::cuda
