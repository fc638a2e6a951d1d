#include "host/step_graph.h"

#include <exception>
#include <utility>

#include "kernels/error.h"
#ifdef HANDGRAD_WITH_CUDA
#include "kernels/common.cuh"
#include "kernels/cuda_check.h"
#endif

namespace handgrad {

namespace {
// Records a CUDA graph of `step`. Empty on success (*exec set), else why not.
std::string capture_cuda(void** stream_slot, const std::function<void()>& step, void** exec_out) {
#ifdef HANDGRAD_WITH_CUDA
  if (!*stream_slot) {
    // Non-blocking: a blocking stream synchronises with the legacy default stream, so any use of
    // that stream in the process while capturing (inside a library, or another thread of a Python
    // program) would invalidate the capture. Capture runs nothing, so it needs no ordering with
    // earlier work; replay() launches the graph on handgrad's own stream, in order with it.
    cudaStream_t s = nullptr;
    const cudaError_t err = cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking);
    if (err != cudaSuccess) return std::string("cudaStreamCreateWithFlags: ") + cudaGetErrorString(err);
    *stream_slot = s;
  }
  const cudaStream_t stream = static_cast<cudaStream_t>(*stream_slot);
  std::string why;
  cudaGraph_t graph = nullptr;
  {
    cuda::StreamScope scope(stream);
    const cudaError_t begin = cudaStreamBeginCapture(stream, cudaStreamCaptureModeThreadLocal);
    if (begin != cudaSuccess) return std::string("cudaStreamBeginCapture: ") + cudaGetErrorString(begin);
    try {
      step();
    } catch (const std::exception& e) {
      why = e.what();
    }
    const cudaError_t end = cudaStreamEndCapture(stream, &graph);
    if (why.empty() && end != cudaSuccess) why = std::string("cudaStreamEndCapture: ") + cudaGetErrorString(end);
  }
  cudaGraphExec_t exec = nullptr;
  if (why.empty()) {
    const cudaError_t inst = cudaGraphInstantiate(&exec, graph, 0);
    if (inst != cudaSuccess) why = std::string("cudaGraphInstantiate: ") + cudaGetErrorString(inst);
  }
  if (graph) cudaGraphDestroy(graph);
  if (!why.empty()) {
    (void)cudaGetLastError();  // a failed capture leaves a (non-sticky) error behind
    return why;
  }
  *exec_out = exec;
  return "";
#else
  (void)stream_slot, (void)step, (void)exec_out;
  return "CUDA graphs need a CUDA build";
#endif
}
}  // namespace

StepGraph::~StepGraph() {
  drop();
#ifdef HANDGRAD_WITH_CUDA
  if (stream_) cudaStreamDestroy(static_cast<cudaStream_t>(stream_));
#endif
}

void StepGraph::drop() {
#ifdef HANDGRAD_WITH_CUDA
  if (exec_) cudaGraphExecDestroy(static_cast<cudaGraphExec_t>(exec_));
#endif
  exec_ = nullptr;
  cpu_step_ = nullptr;
}

bool StepGraph::capture(Device device, std::function<void()> step, std::string* failure) {
  drop();
  if (device == Device::CPU) {
    cpu_step_ = std::move(step);
    return true;
  }
  *failure = capture_cuda(&stream_, step, &exec_);  // the trainer prints it, once, and goes on eagerly
  return failure->empty();
}

void StepGraph::replay() {
  HG_ASSERT(ready(), "StepGraph::replay before a successful capture");
  if (cpu_step_) return cpu_step_();
#ifdef HANDGRAD_WITH_CUDA
  CUDA_CHECK(cudaGraphLaunch(static_cast<cudaGraphExec_t>(exec_), cuda::stream()));
#endif
}

}  // namespace handgrad
