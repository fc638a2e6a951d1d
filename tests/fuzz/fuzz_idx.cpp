// IDX files, gzip-compressed or plain, as images and as labels.
#include "host/idx.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::string path = handgrad::fuzz::as_file(data, size, ".idx");
  handgrad::fuzz::expect_user_errors_only([&] { handgrad::read_idx_images(path); });
  return handgrad::fuzz::expect_user_errors_only([&] { handgrad::read_idx_labels(path); });
}
