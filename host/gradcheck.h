// `handgrad gradcheck`: the backward kernels against central finite differences of a float64
// forward, on random shapes; for linear also against X^T dL/dY evaluated directly (Q5).
#pragma once
#include <string>
#include <vector>

#include "host/device.h"

namespace handgrad {

struct GradcheckResult {
  std::string op, what;
  double worst = 0, tolerance = 0;
  bool pass = false;
};

// which: linear | relu | mse | xent | conv | all. A UserError for anything else.
std::vector<GradcheckResult> run_gradcheck(const std::string& which, Device device, uint64_t seed = 2024);

}  // namespace handgrad
