// Model weights on disk: torch.save files (.pth: a zip archive holding a pickle) and
// safetensors. Both are read strictly: every size, offset and opcode is checked, and anything
// outside what these formats hold for a state dict is refused with a message naming the file.
//
// The .pth reader is a restricted unpickler: it understands exactly the opcodes (protocols 2
// and 4) and the three callables that torch.save emits for a state dict
// (collections.OrderedDict, torch._utils._rebuild_tensor_v2, torch._utils._rebuild_parameter),
// executes nothing, and refuses any other global.
#pragma once
#include <string>
#include <utility>
#include <vector>

#include "host/tensor.h"

namespace handgrad {

// An ordered name -> tensor map (float32 tensors; int64 for e.g. BatchNorm's
// num_batches_tracked), on the CPU.
struct StateDict {
  std::vector<std::pair<std::string, Tensor>> entries;

  const Tensor* find(const std::string& name) const;
  void add(const std::string& name, Tensor t);
};

StateDict read_pth(const std::string& path);
StateDict read_safetensors(const std::string& path);
// A zip archive (or a file named *.pth / *.pt) is read as torch.save's, anything else as safetensors.
StateDict read_state_dict(const std::string& path);
// F32 / I64 tensors, header entries in the dict's order; written whole or not at all.
void write_safetensors(const std::string& path, const StateDict& sd);

}  // namespace handgrad
