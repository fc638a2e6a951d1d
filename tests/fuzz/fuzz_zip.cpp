// torch.save files as they come: the zip container, then whatever it holds.
#include "host/checkpoint.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = handgrad::fuzz::as_file(data, size, ".pth");
  return handgrad::fuzz::expect_user_errors_only([&] { handgrad::read_pth(path); });
}
