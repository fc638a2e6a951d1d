// Runs the matplotlib scripts in plots/ (data in, PDF out). Plots are a convenience: when no
// python3 with matplotlib is found, run_plot() prints one warning and returns false.
#pragma once
#include <string>
#include <vector>

namespace handgrad {

// Runs `python3 plots/<script> args...`; true when it wrote its output.
bool run_plot(const std::string& script, const std::vector<std::string>& args);

}  // namespace handgrad
