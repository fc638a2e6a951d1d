// Shared by the fuzz targets: each feeds bytes to one of handgrad's parsers through the same
// entry point the CLI uses. A UserError is the expected answer to bad input; anything else (an
// InternalError, a crash, a sanitizer report) is a finding.
#pragma once
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "kernels/error.h"

namespace handgrad::fuzz {

// The file readers take a path: the input is written to a per-process file with `suffix`.
inline std::string as_file(const uint8_t* data, size_t size, const char* suffix) {
  static const std::string dir = [] {
    const char* t = std::getenv("TMPDIR");
    return std::string(t && *t ? t : "/tmp");
  }();
  const std::string path = dir + "/handgrad_fuzz_" + std::to_string(::getpid()) + suffix;
  FILE* f = std::fopen(path.c_str(), "wb");
  if (!f) std::abort();
  if (size && std::fwrite(data, 1, size, f) != size) std::abort();
  std::fclose(f);
  return path;
}

// Runs fn; bad input must end in a UserError, never another exception.
template <typename Fn>
int expect_user_errors_only(Fn&& fn) {
  try {
    fn();
  } catch (const UserError&) {
  }
  return 0;
}

}  // namespace handgrad::fuzz
