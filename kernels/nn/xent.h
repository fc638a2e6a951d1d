// Softmax cross-entropy over a batch of logits [N, K] with integer labels, mean over the batch:
//   loss = 1/N sum_n (logsumexp(z_n) - z_n[y_n]),   dz = (softmax(z) - onehot(y)) / N
// Also counts the rows whose largest logit is the label (ties: the first index wins).
#pragma once
#include <cstdint>

namespace handgrad {

namespace cpu {
// Returns the loss; dz may be null (evaluation). *correct gets the number of right answers.
double softmax_xent(float* dz, const float* z, const int32_t* labels, int64_t N, int64_t K, int64_t* correct);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// Per-row results on the device: row_loss[n] (logsumexp - z[label]) and row_correct[n] (0/1);
// dz as in the CPU twin when not null. The caller sums the rows (on the host, in order).
void softmax_xent(float* dz, float* row_loss, int32_t* row_correct, const float* z, const int32_t* labels,
                  int64_t N, int64_t K);
}  // namespace cuda
#endif

}  // namespace handgrad
