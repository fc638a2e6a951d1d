// safetensors files (header length, JSON header, dtypes, offsets).
#include "host/checkpoint.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = handgrad::fuzz::as_file(data, size, ".safetensors");
  return handgrad::fuzz::expect_user_errors_only([&] { handgrad::read_safetensors(path); });
}
