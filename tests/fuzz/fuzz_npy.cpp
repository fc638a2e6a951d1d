// .npy files (header grammar, dtypes, sizes).
#include "host/npy.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = handgrad::fuzz::as_file(data, size, ".npy");
  return handgrad::fuzz::expect_user_errors_only([&] { handgrad::read_npy(path); });
}
