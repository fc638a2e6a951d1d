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

}  // namespace handgrad
