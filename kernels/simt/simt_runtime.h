// What the SIMT emulator's runtime offers besides the kernels' side (simt.h): device memory for the
// emulated CUDA runtime API (cuda_runtime.cpp), and what the tests read back.
#pragma once
#include <string>
#include <vector>

#include "kernels/simt/simt.h"

namespace handgrad::simt {

// The limits a launch is checked against: an H100's (sm_90).
constexpr unsigned kMaxThreadsPerBlock = 1024;
constexpr size_t kSharedPerBlock = 48 * 1024;          // without cudaFuncSetAttribute
constexpr int kSharedPerBlockOptin = 232448;           // the most cudaFuncSetAttribute may allow
constexpr int kMultiprocessors = 132;

// Device memory: exactly `bytes` long as far as the checks go (cudaMalloc's 256-byte alignment).
void* device_alloc(size_t bytes);
bool device_free(void* p);                  // false: not a live allocation
size_t device_bytes_from(const void* p);    // bytes from p to the end of its allocation; 0: none
size_t device_bytes_in_use();
void set_max_dynamic_smem(const void* kernel, int bytes);

// The error the last launch left (cudaGetLastError clears it, cudaPeekAtLastError does not).
cudaError_t take_last_error(bool clear);
// The last violation's report ("" when the last launch had none).
const std::string& last_violation();
// Every kernel run so far: "name\tgrid x block[ smem N]\tlaunches", one line per shape.
std::vector<std::string> launch_summary();

}  // namespace handgrad::simt
