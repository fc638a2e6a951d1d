// cuBLAS and cuDNN are opened at their first call, not when handgrad starts. Linked the usual way
// they are loaded, relocated and initialised by every command (~230 MB of memory and ~80 ms on a
// machine that never uses a GPU), and a CUDA build cannot start at all where they are absent. So
// handgrad does not link them: kernels/cuda_libs.cpp defines each cuBLAS/cuDNN function we call,
// with the header's own prototype, as a forwarder that opens the library at the first call and
// calls the real function. Call sites stay plain cuBLAS/cuDNN calls. (The CUDA runtime is linked
// statically and opens the driver itself, at its first call.)
//
// Where a library is looked for, in order:
//   0. already in the process (PyTorch's, next to the Python module): that one;
//   1. $HANDGRAD_CUDA_LIBRARY_PATH (folders, ':'-separated): when set, only there;
//   2. $LD_LIBRARY_PATH;
//   3. the CUDA toolkit and cuDNN folders this handgrad was built against;
//   4. the system's library cache (/etc/ld.so.cache), then /usr/lib and /usr/local/cuda's folders;
//   5. (opening only) wherever the system's loader finds the name alone.
// A library that is not found, or does not open, ends the command with one line naming it and
// where it was looked for (a UserError: exit code 2).
#pragma once
#include <string>
#include <vector>

namespace handgrad {

struct CudaLibrary {
  std::string label;    // "cuBLAS"
  std::string soname;   // "libcublas.so.13"
  std::string path;     // where it is, "" when not found (or found but not usable)
  std::string why_not;  // when path is "": where it was looked for, or why it does not open
  std::string version;  // cuDNN: the library's own; cuBLAS: the one handgrad was built against
};

// cuBLAS and cuDNN: where each is, for `handgrad info` and the check behind --device cuda. cuBLAS
// is not opened (that costs 150 MB); cuDNN's entry library (a 3 MB dispatcher) is, for its version.
// Defined in CUDA builds only.
std::vector<CudaLibrary> find_cuda_libraries();

// Opens both (they stay open; later calls are cheap), or says which does not open and why: the
// check behind cuda_available(), so that --device auto falls back to the CPU where a library is
// broken (cuBLAS without its cuBLASLt), not only where it is missing.
bool open_cuda_libraries(std::string* why_not);

}  // namespace handgrad
