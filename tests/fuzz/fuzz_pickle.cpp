// The restricted unpickler: the input is the pickle of a well-formed torch.save archive, whose
// data/0 storage holds 64 bytes, so the fuzzer spends its time on opcodes, not on the zip.
#include "host/checkpoint.h"
#include "host/zip.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace handgrad;
  static const std::string storage = [] {
    const std::string ones(64, '\1');
    return fuzz::as_file(reinterpret_cast<const uint8_t*>(ones.data()), ones.size(), ".storage");
  }();
  static const std::string version = fuzz::as_file(reinterpret_cast<const uint8_t*>("3\n"), 2, ".version");
  const std::string pkl = fuzz::as_file(data, size, ".pkl");
  const std::string path = fuzz::as_file(nullptr, 0, ".pth");
  write_zip(path, {{"archive/data.pkl", pkl}, {"archive/data/0", storage}, {"archive/version", version}});
  return fuzz::expect_user_errors_only([&] { read_pth(path); });
}
