// Softmax cross-entropy over a batch of logits [N, K] with integer labels, mean over the batch:
//   loss = 1/N sum_n (logsumexp(z_n) - z_n[y_n]),   dz = (softmax(z) - onehot(y)) / N
// Also counts the rows whose largest logit is the label (ties: the first index wins).
#pragma once
#include <cstdint>

namespace handgrad {

// add_row_sums: sums[0] += sum_n row_loss[n], sums[1] += sum_n row_correct[n], in double and
// in a fixed order, so a training loop keeps its loss on the device and reads it when it logs.

namespace cpu {
// Returns the loss; dz may be null (evaluation). *correct gets the number of right answers.
double softmax_xent(float* dz, const float* z, const int32_t* labels, int64_t N, int64_t K, int64_t* correct);
void add_row_sums(double* sums, const float* row_loss, const int32_t* row_correct, int64_t N);
}  // namespace cpu

#ifdef HANDGRAD_WITH_CUDA
namespace cuda {
// Per-row results on the device: row_loss[n] (logsumexp - z[label]) and row_correct[n] (0/1);
// dz as in the CPU twin when not null. add_row_sums adds them up on the device.
void softmax_xent(float* dz, float* row_loss, int32_t* row_correct, const float* z, const int32_t* labels,
                  int64_t N, int64_t K);
void add_row_sums(double* sums, const float* row_loss, const int32_t* row_correct, int64_t N);
}  // namespace cuda
#endif

}  // namespace handgrad
