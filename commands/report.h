// `handgrad report`: runs the homework's exercises and writes their deliverables under one
// folder (results/ by default). Each exercise adds a section; this file holds the driver and
// the Q1 (einsum) section.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "host/device.h"

namespace handgrad {

struct ReportOptions {
  std::string out_dir = "results";
  Device device = Device::CPU;
  uint64_t seed = 2024;
  bool quick = false;
  bool quiet = false;  // no progress lines (the results are printed all the same)
  std::vector<std::string> only;  // empty: every exercise
};

// Returns the process exit code (0: every check passed, 1: a check failed).
int run_report(const ReportOptions& opt);

// Every part `--only` accepts, in order: the exercises q1-q5, and "scripts" (the checklist's
// question1-3.py, run through the Python module).
const std::vector<std::string>& report_exercises();

}  // namespace handgrad
