// A training step captured once and replayed: on the GPU a CUDA graph, one launch instead of the
// step's ~300. On the CPU the step is recorded as it is (a copy of the callable) and replay runs
// it again, host code included: the caller puts back the host-side state a GPU replay would not
// have touched (ResNet18's books), so that the capture/replay bookkeeping runs in the CPU tests
// exactly as on the GPU. The step must allocate nothing and synchronise nothing (a model's
// training step is built that way: one memory plan, the loss kept on the device).
#pragma once
#include <functional>
#include <string>

#include "host/device.h"

namespace handgrad {

class StepGraph {
 public:
  StepGraph() = default;
  ~StepGraph();
  StepGraph(const StepGraph&) = delete;
  StepGraph& operator=(const StepGraph&) = delete;

  // Records `step` (it runs nothing while recorded) and makes it launchable. False, with the
  // reason in *failure, when something in it cannot be captured; the previous graph is dropped
  // either way. `step` must own what it refers to (the CPU keeps and reruns it).
  bool capture(Device device, std::function<void()> step, std::string* failure);
  bool ready() const { return exec_ != nullptr || cpu_step_ != nullptr; }
  // Forgets the recorded step (what it captured no longer holds: other weights, other ranges).
  void reset() { drop(); }
  // Queues the recorded step on handgrad's stream order.
  void replay();

 private:
  void drop();
  void* stream_ = nullptr;  // cudaStream_t
  void* exec_ = nullptr;    // cudaGraphExec_t
  std::function<void()> cpu_step_;
};

}  // namespace handgrad
