// The values of flags and variables that handgrad parses itself (CLI11 parses the rest):
// --max-memory / $HANDGRAD_MAX_MEMORY sizes and --device names.
#include "host/device.h"
#include "host/memory.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace handgrad;
  const std::string text(reinterpret_cast<const char*>(data), size);
  fuzz::expect_user_errors_only([&] { human_bytes(parse_memory_size(text, "--max-memory")); });
  return fuzz::expect_user_errors_only([&] { parse_device(text); });
}
