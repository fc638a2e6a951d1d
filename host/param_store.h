// A model's named tensors in one memory plan: parameters, their gradients and their momentum
// each in one flat buffer on the model's device (so an optimizer step is one launch), running
// statistics in another, integer step counters (BatchNorm's num_batches_tracked) on the host.
// Entries keep the order they were added in, which is the state dict's order, so state dicts
// move between handgrad and PyTorch unchanged.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "host/checkpoint.h"
#include "host/memory.h"
#include "host/tensor.h"
#include "kernels/optim/sgd.h"

namespace handgrad {

class ParamStore {
 public:
  enum class Kind { Param, Buffer, Counter };
  struct Entry {
    Kind kind;
    std::string name;
    Shape shape;
    int64_t offset;  // into the parameters, the buffers or the counters
    int64_t numel() const { return shape_numel(shape); }
  };

  // Declares an entry (before allocate()); returns its offset.
  int64_t add(Kind kind, const std::string& name, const Shape& shape);
  // The flat buffers, zeroed; every parameter trains until set_trainable() says otherwise. On the
  // CPU they are counted in `host_tally` (when given) before they are made.
  void allocate(Device device, MemoryTally* host_tally = nullptr);

  const std::vector<Entry>& entries() const { return entries_; }
  float* param(int64_t offset) { return params_.data<float>() + offset; }
  float* grad(int64_t offset) { return grads_.data<float>() + offset; }
  float* buffer(int64_t offset) { return buffers_.data<float>() + offset; }
  float* params() { return params_.data<float>(); }
  float* grads() { return grads_.data<float>(); }
  float* velocity() { return velocity_.data<float>(); }
  std::vector<int64_t>& counters() { return counters_; }

  // The parameters for which `trains` holds, as ranges of the flat buffer (touching ones merged).
  void set_trainable(const std::function<bool(const Entry&)>& trains);
  const ParamRanges& train_ranges() const { return ranges_; }

  // Every float entry from fill(entry, its index in entries(), its values on the host);
  // counters and momentum to zero.
  void init(const std::function<void(const Entry&, int64_t, float*)>& fill);
  // Takes every tensor of `sd` whose name and shape match; a name with another shape or dtype,
  // or (when `strict`) a missing or unknown name, is a UserError naming the key.
  void load(const StateDict& sd, bool strict, const std::string& model);
  StateDict state_dict() const;     // every entry, on the host
  // The parameters, buffers and counters of a store with the same entries (a model of the same
  // layout sized for other inputs), copied without a state dict between.
  void copy_values(const ParamStore& from);
  StateDict momentum_state() const;  // "<param>" -> momentum, for the trainable parameters

 private:
  const Entry* find(const std::string& name) const;
  std::vector<Entry> entries_;
  std::vector<bool> trainable_;
  int64_t param_end_ = 0, buffer_end_ = 0, counter_end_ = 0;
  Device device_ = Device::CPU;
  Tensor params_, grads_, velocity_, buffers_;
  std::vector<int64_t> counters_;
  ParamRanges ranges_;
};

}  // namespace handgrad
