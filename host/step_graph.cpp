#include "host/step_graph.h"

#include <exception>

#include "kernels/error.h"
#ifdef HANDGRAD_WITH_CUDA
#include "kernels/common.cuh"
#include "kernels/cuda_check.h"
#endif

namespace handgrad {

#ifdef HANDGRAD_WITH_CUDA

StepGraph::~StepGraph() {
  drop();
  if (stream_) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
}

void StepGraph::drop() {
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
  exec_ = nullptr;
}

bool StepGraph::capture(Device device, const std::function<void()>& step, std::string* failure) {
  drop();
  if (device != Device::CUDA) {
    *failure = "CUDA graphs need the GPU";
    return false;
  }
  if (!stream_) {  // blocking: ordered with the default stream
    cudaStream_t s = nullptr;
    CUDA_CHECK(cudaStreamCreate(&s));
    stream_ = s;
  }
  const cudaStream_t stream = static_cast<cudaStream_t>(stream_);
  std::string why;
  cudaGraph_t graph = nullptr;
  {
    cuda::StreamScope scope(stream);
    CUDA_CHECK(cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal));
    try {
      step();
    } catch (const std::exception& e) {
      why = e.what();
    }
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (why.empty() && end != cudaSuccess) why = cudaGetErrorString(end);
  }
  cudaGraphExec_t exec = nullptr;
  if (why.empty() && cudaGraphInstantiate(&exec, graph, 0) != cudaSuccess) why = "cudaGraphInstantiate failed";
  if (graph) cudaGraphDestroy(graph);
  if (!why.empty()) {
    (void)cudaGetLastError();  // a failed capture leaves a (non-sticky) error behind
    *failure = why;
    return false;
  }
  exec_ = exec;
  return true;
}

void StepGraph::replay() {
  HG_ASSERT(exec_, "StepGraph::replay before a successful capture");
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), static_cast<cudaStream_t>(stream_)));
}

#else

StepGraph::~StepGraph() = default;
void StepGraph::drop() {}
bool StepGraph::capture(Device, const std::function<void()>&, std::string* failure) {
  *failure = "CUDA graphs need the GPU";
  return false;
}
void StepGraph::replay() { HG_ASSERT(false, "StepGraph::replay without CUDA"); }

#endif

}  // namespace handgrad
