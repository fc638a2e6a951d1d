// --expr: the expression parser, then the AD engine and both renderers on what it accepts.
#include "models/autodiff.h"
#include "tests/fuzz/fuzz_common.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace handgrad;
  const std::string text(reinterpret_cast<const char*>(data), size);
  return fuzz::expect_user_errors_only([&] {
    const AdGraph g = parse_functions(text);
    const AdResult r = autodiff(g, std::vector<double>(g.n_inputs, 0.5));
    render_text(g, r);
    render_json(g, r);
  });
}
