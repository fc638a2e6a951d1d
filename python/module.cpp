// handgrad._core: the Python bindings over host/ and models/ (the same C++ the CLI runs; nothing
// of its own but the translation between Python's objects and handgrad's).
//
// Arrays in: numpy arrays through the buffer protocol, anything else that speaks DLPack (torch
// tensors, CPU or CUDA) through __dlpack__. A float32 C-contiguous input is read in place; any
// other is converted to one first (a copy, counted in _stats()). Arrays out: handgrad's result
// buffer itself, handed to numpy (a capsule keeps the tensor alive) or to torch (DLPack), as the
// caller's kind on the caller's device.
//
// Python's rules: UserError -> ValueError, every other handgrad error -> RuntimeError; long
// calls run without the GIL and check for Ctrl-C between steps (KeyboardInterrupt).
#include <dlpack/dlpack.h>
#include <pybind11/functional.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <atomic>
#include <mutex>
#include <chrono>
#include <cstring>
#include <memory>
#include <map>
#include <optional>
#include <stdexcept>
#include <thread>

#include "host/checkpoint.h"
#include "host/device.h"
#include "host/einsum.h"
#include "host/memory.h"
#include "host/tensor.h"
#include "models/autodiff.h"
#include "models/mlp.h"
#include "models/resnet18.h"
#include "models/transfer.h"

namespace py = pybind11;
using namespace handgrad;

namespace {

// ---------------------------------------------------------------------------------------------
// Arrays in and out
// ---------------------------------------------------------------------------------------------
enum class ArrayKind { Numpy, Torch };

struct InteropStats {
  std::atomic<int64_t> borrowed{0}, converted{0};
  std::atomic<uintptr_t> last_result{0};
};
InteropStats g_stats;

// torch's objects the interop needs, looked up once (leaked on purpose: they must outlive every
// call, and Python tears modules down in its own order at exit).
struct TorchHandles {
  py::handle tensor, float32, bfloat16, strided, from_dlpack;
};
const TorchHandles& torch_handles() {
  static const TorchHandles h = [] {
    TorchHandles t;
    const py::module_ torch = py::module_::import("torch");
    t.tensor = py::object(torch.attr("Tensor")).release();
    t.float32 = py::object(torch.attr("float32")).release();
    t.bfloat16 = py::object(torch.attr("bfloat16")).release();
    t.strided = py::object(torch.attr("strided")).release();
    t.from_dlpack = py::object(py::module_::import("torch.utils.dlpack").attr("from_dlpack")).release();
    return t;
  }();
  return h;
}

// isinstance(o, torch.Tensor), so subclasses count too; torch is looked at only when the caller has
// already imported it (a numpy user never pays for importing torch).
// An object whose __class__ raises makes isinstance raise: that exception is thrown.
bool is_torch_tensor(py::handle o) {
  static const py::handle modules = py::object(py::module_::import("sys").attr("modules")).release();
  if (!py::reinterpret_borrow<py::dict>(modules).contains("torch")) return false;
  const int is = PyObject_IsInstance(o.ptr(), torch_handles().tensor.ptr());
  if (is < 0) throw py::error_already_set();
  return is == 1;
}

bool contiguous(const DLTensor& t) {
  if (!t.strides) return true;
  for (int d = 0; d < t.ndim; ++d)
    if (t.shape[d] == 0) return true;  // no element to misread (torch gives empty tensors any strides)
  int64_t expect = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    if (t.shape[d] != 1 && t.strides[d] != expect) return false;
    expect *= t.shape[d];
  }
  return true;
}

// A caller's array seen as a handgrad tensor, and what keeps its memory alive while it is used.
// Destroy with the GIL held (the DLPack deleter may release Python objects).
struct Borrowed {
  Tensor tensor;
  py::object owner;
  DLManagedTensor* managed = nullptr;
  ArrayKind kind = ArrayKind::Numpy;
  bool converted = false;
  HostBytesHeld copy_held;  // a host copy (converted) counts as memory handgrad holds

  Borrowed() = default;
  Borrowed(const Borrowed&) = delete;
  Borrowed& operator=(const Borrowed&) = delete;
  Borrowed(Borrowed&& o) noexcept
      : tensor(std::move(o.tensor)), owner(std::move(o.owner)), managed(o.managed), kind(o.kind),
        converted(o.converted), copy_held(std::move(o.copy_held)) {
    o.managed = nullptr;
  }
  ~Borrowed() {
    tensor = Tensor();
    if (managed && managed->deleter) managed->deleter(managed);
  }
};

// Only real numbers are read: numpy's complex arrays and object arrays (a list holding None would
// read as NaN) are refused.
void require_real(const py::array& a, const std::string& what) {
  const py::dtype dt = a.dtype();
  const char kind = dt.kind();
  HG_REQUIRE(kind == 'f' || kind == 'i' || kind == 'u' || kind == 'b', what, " has numpy dtype ",
             std::string(py::str(py::object(dt))), ": handgrad takes real numbers",
             kind == 'c' ? " (a complex value would lose its imaginary part)" : "");
}

// Exceptions that are the user's, not a reading failure: Ctrl-C and sys.exit() inside a caller's
// __array__, __dlpack__, __index__ or __torch_function__ propagate as they are.
bool users_own(const py::error_already_set& e) {
  return e.matches(PyExc_KeyboardInterrupt) || e.matches(PyExc_SystemExit);
}

// `obj` as a numpy array, or nullopt when numpy cannot read it: py::array::ensure,
// except that Ctrl-C (or sys.exit()) inside the object's __array__ propagates (ensure clears every
// error, and a retried conversion then succeeded as if no signal came). Not py::array() for
// nothing: that is an empty array, and an object whose __array__ failed read as one.
std::optional<py::array> to_array(py::handle obj) {
  PyObject* r = py::detail::npy_api::get().PyArray_FromAny_(obj.ptr(), nullptr, 0, 0,
                                                              py::detail::npy_api::NPY_ARRAY_ENSUREARRAY_, nullptr);
  if (!r) {
    const py::error_already_set e;
    if (users_own(e)) throw e;
    return std::nullopt;
  }
  return py::reinterpret_steal<py::array>(r);
}

// A copy of `bytes` of a caller's array is about to be made: within the budget, and within what
// the copies of one call (`copies`, when given) may take together - each may be under the size
// a single allocation is checked from.
void require_copy(uint64_t bytes, const std::string& what, MemoryTally* copies) {
  if (copies) copies->add(bytes);
  require_memory(bytes, what);
}

Borrowed borrow_numpy(py::handle obj, const std::string& what, MemoryTally* copies) {
  Borrowed b;
  const bool is_array = py::isinstance<py::array>(obj);
  const bool ready = is_array && py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<float>()) &&
                     (py::reinterpret_borrow<py::array>(obj).flags() & py::array::c_style);
  using F32 = py::array_t<float, py::array::c_style | py::array::forcecast>;
  const auto unreadable = [&] {
    return UserError(cat(what, " cannot be read as an array of numbers (", std::string(py::str(py::type::of(obj))), ")"));
  };
  F32 arr;
  if (ready) {
    arr = py::reinterpret_borrow<F32>(obj);
  } else {
    // One conversion of the object (its __array__ runs once: a retry could swallow a Ctrl-C that
    // came in between), then a cast of the array it gave.
    const std::optional<py::array> read = is_array ? py::reinterpret_borrow<py::array>(obj) : to_array(obj);
    if (!read) throw unreadable();
    const py::array& any = *read;
    require_real(any, what);
    // The copy may be far larger than the array's memory (np.broadcast_to): within the budget.
    require_copy(static_cast<uint64_t>(any.size()) * sizeof(float), what + " as a contiguous float32 copy", copies);
    arr = F32::ensure(any);
    if (!arr) {
      PyErr_Clear();
      throw unreadable();
    }
  }
  b.converted = !ready;
  if (b.converted) b.copy_held = HostBytesHeld(static_cast<uint64_t>(arr.nbytes()));
  Shape shape(arr.shape(), arr.shape() + arr.ndim());
  HG_REQUIRE(arr.ndim() <= kMaxDims, what, " has ", arr.ndim(), " dims; handgrad takes at most ", kMaxDims);
  b.tensor = Tensor::borrow(const_cast<float*>(arr.data()), shape, DType::F32, Device::CPU);
  b.owner = std::move(arr);
  return b;
}

// A torch tensor's numel() or element_size(): a subclass may return anything.
uint64_t torch_count(const py::object& src, const char* method, const std::string& what) {
  try {
    return py::int_(src.attr(method)()).cast<uint64_t>();
  } catch (const py::cast_error&) {
    throw UserError(cat(what, ": its ", method, "() is not a count"));
  }
}

// A host copy of torch tensor `src` at `bytes` per element is about to be made: within the budget
// first (an .expand() view has far more elements than memory). GPU copies stay on the GPU.
void require_torch_copy(const py::object& src, uint64_t bytes, const std::string& what, MemoryTally* copies = nullptr) {
  if (!py::bool_(src.attr("is_cuda"))) require_copy(torch_count(src, "numel", what) * bytes, what, copies);
}

// A torch tensor as handgrad may read it: detached; refused as numpy's are when complex (the
// imaginary part would be lost) or not strided (sparse: no dense memory to read); with the negative
// bit resolved (torch._neg_view, .conj().imag: the shared memory holds the values without their
// sign, and DLPack would hand it out as it is). *copied is set when a new tensor was made.
py::object readable_torch(py::object src, const std::string& what, bool* copied, MemoryTally* copies = nullptr) {
  HG_REQUIRE(!py::bool_(src.attr("is_complex")()), what, " is a complex tensor (",
             std::string(py::str(src.attr("dtype"))), "): handgrad takes real numbers (a complex value would lose its ",
             "imaginary part)");
  HG_REQUIRE(py::object(src.attr("layout")).is(torch_handles().strided), what, " is a ",
             std::string(py::str(src.attr("layout"))), " tensor: pass a dense one (.to_dense())");
  HG_REQUIRE(!py::bool_(src.attr("is_quantized")), what, " is a quantized tensor: dequantize it first (.dequantize())");
  HG_REQUIRE(!py::bool_(src.attr("is_meta")), what, " is a meta tensor: it holds no data");
  src = src.attr("detach")();
  if (py::hasattr(src, "is_neg") && py::bool_(src.attr("is_neg")())) {
    require_torch_copy(src, torch_count(src, "element_size", what), what + " with its negative bit resolved", copies);
    src = src.attr("resolve_neg")();
    *copied = true;
  }
  return src;
}

// A Python exception as one line of a message, "TypeError: why" (its first line, at most 200
// characters): error_already_set::what() carries the whole traceback.
std::string one_line(const py::error_already_set& e) {
  std::string type = "an exception", text;
  try {
    type = py::str(e.type().attr("__name__"));
    text = py::str(e.value());
  } catch (...) {  // a __str__ that raises too
  }
  text = text.substr(0, std::min(text.find('\n'), size_t(200)));
  return text.empty() ? type : type + ": " + text;
}

// Runs `read`, Python calls on a caller's object: an exception it raises becomes a UserError
// (ValueError, one line) that says what was being read. Ctrl-C stays a KeyboardInterrupt.
template <class Read>
auto reading(const std::string& what, Read&& read) -> decltype(read()) {
  try {
    return read();
  } catch (const py::error_already_set& e) {
    if (users_own(e)) throw;
    throw UserError(cat(what, ": ", one_line(e)));
  }
}

// DLPack's device type of a non-torch producer, from its __dlpack_device__() = (type, id).
int dlpack_device_type(const py::object& src, const std::string& what) {
  try {
    return py::tuple(src.attr("__dlpack_device__")())[0].cast<int>();
  } catch (const py::error_already_set& e) {
    if (users_own(e)) throw;
    throw UserError(cat(what, ": its __dlpack_device__() failed: ", one_line(e)));
  } catch (const py::cast_error&) {
    throw UserError(cat(what, ": its __dlpack_device__() must return (device type, device id), two ints"));
  }
}

Borrowed borrow_dlpack(py::handle obj, const std::string& what, MemoryTally* copies) {
  Borrowed b;
  b.kind = reading(what + ": its type cannot be checked", [&] { return is_torch_tensor(obj); }) ? ArrayKind::Torch
                                                                                             : ArrayKind::Numpy;
  py::object src = py::reinterpret_borrow<py::object>(obj);
  bool torch_on_cuda = false;
  if (b.kind == ArrayKind::Torch) {
    // DLPack refuses tensors that require grad; a float32 contiguous tensor stays as it is. A
    // subclass's __torch_function__ runs in each of these calls: what it raises is named.
    src = reading(what + " (a torch tensor) cannot be read", [&] {
      py::object t = readable_torch(src, what, &b.converted, copies);
      const py::handle f32 = torch_handles().float32;
      if (!py::object(t.attr("dtype")).is(f32) || !py::bool_(t.attr("is_contiguous")())) {
        require_torch_copy(t, sizeof(float), what + " as a contiguous float32 copy", copies);
        t = t.attr("to")(f32).attr("contiguous")();
        b.converted = true;
      }
      torch_on_cuda = py::bool_(t.attr("is_cuda"));
      return t;
    });
  }
  // torch's __dlpack_device__ is Python code (2 us here); its is_cuda tells the same.
  const int dev_type = b.kind == ArrayKind::Torch ? (torch_on_cuda ? kDLCUDA : kDLCPU) : dlpack_device_type(src, what);
  // On a GPU, ask the producer to order its pending work before handgrad's stream (the legacy
  // default stream, DLPack's stream 1).
  py::object cap;
  try {
    cap = dev_type == kDLCUDA ? src.attr("__dlpack__")(py::arg("stream") = 1) : src.attr("__dlpack__")();
  } catch (const py::error_already_set& e) {  // sparse, meta, quantized tensors ...: the producer says why
    if (users_own(e)) throw;
    throw UserError(cat(what, " cannot be shared through DLPack: ", one_line(e)));
  }
  auto* managed = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap.ptr(), "dltensor"));
  if (!managed) {
    PyErr_Clear();
    throw UserError(cat(what, ": __dlpack__ did not return a DLPack capsule"));
  }
  PyCapsule_SetName(cap.ptr(), "used_dltensor");  // ours now: we call its deleter
  b.managed = managed;
  b.owner = src;
  const DLTensor& t = managed->dl_tensor;
  HG_REQUIRE(t.dtype.code == kDLFloat && t.dtype.bits == 32 && t.dtype.lanes == 1, what,
             " is not float32 (DLPack type code ", int(t.dtype.code), ", ", int(t.dtype.bits), " bits): convert it first");
  HG_REQUIRE(t.ndim >= 0 && t.ndim <= kMaxDims, what, " has ", t.ndim, " dims; handgrad takes 0 to ", kMaxDims);
  HG_REQUIRE(contiguous(t), what, " is not contiguous: pass a contiguous array");
  Device device = Device::CPU;
  if (t.device.device_type == kDLCUDA) {
    HG_REQUIRE(built_with_cuda(), what, " is on a GPU, and this handgrad was built without CUDA");
    HG_REQUIRE(t.device.device_id == 0, what, " is on cuda:", t.device.device_id, "; handgrad runs on cuda:0");
    device = Device::CUDA;
  } else {
    HG_REQUIRE(t.device.device_type == kDLCPU, what, " is on a device handgrad does not use (DLPack type ",
               int(t.device.device_type), ")");
  }
  Shape shape(t.shape, t.shape + t.ndim);
  HG_REQUIRE(t.data || std::count(shape.begin(), shape.end(), 0) > 0, what,
             ": its DLPack tensor has elements and no data pointer");
  b.tensor = Tensor::borrow(static_cast<char*>(t.data) + t.byte_offset, shape, DType::F32, device);
  if (b.converted && device == Device::CPU) b.copy_held = HostBytesHeld(b.tensor.nbytes());
  return b;
}

Borrowed borrow_array(py::handle obj, const std::string& what, MemoryTally* copies = nullptr) {
  Borrowed b = !py::isinstance<py::array>(obj) && py::hasattr(obj, "__dlpack__") ? borrow_dlpack(obj, what, copies)
                                                                                  : borrow_numpy(obj, what, copies);
  (b.converted ? g_stats.converted : g_stats.borrowed)++;
  return b;
}

py::array to_numpy(Tensor t) {
  HG_ASSERT(t.device() == Device::CPU, "a numpy result must be on the CPU");
  auto* held = new Tensor(std::move(t));
  py::capsule owner(held, [](void* p) { delete static_cast<Tensor*>(p); });
  std::vector<py::ssize_t> shape(held->shape().begin(), held->shape().end());
  const py::dtype dtype = held->dtype() == DType::F32 ? py::dtype::of<float>() : py::dtype::of<int64_t>();
  g_stats.last_result = reinterpret_cast<uintptr_t>(held->raw());
  return py::array(dtype, shape, {}, held->raw(), owner);
}

// DLPack export: the capsule owns the tensor until a consumer takes it (and calls the deleter).
struct Exported {
  Tensor tensor;
  std::vector<int64_t> shape;
  DLManagedTensor managed{};
};

py::object to_torch(Tensor t) {
  auto* e = new Exported{std::move(t), {}, {}};
  e->shape.assign(e->tensor.shape().begin(), e->tensor.shape().end());
  DLTensor& d = e->managed.dl_tensor;
  d.data = e->tensor.raw();
  d.device = {e->tensor.device() == Device::CUDA ? kDLCUDA : kDLCPU, 0};
  d.ndim = static_cast<int>(e->shape.size());
  d.dtype = {static_cast<uint8_t>(kDLFloat), 32, 1};
  d.shape = e->shape.data();
  d.strides = nullptr;  // compact, row-major
  e->managed.manager_ctx = e;
  // A consumer may still have work queued on its own stream that reads a GPU result: wait for the
  // device before the buffer goes back to handgrad's pool (a CPU result just goes).
  e->managed.deleter = [](DLManagedTensor* m) {
    auto* ex = static_cast<Exported*>(m->manager_ctx);
    if (ex->tensor.device() == Device::CUDA) {
      try {
        synchronize(Device::CUDA);
      } catch (...) {  // a deleter must not throw; the error surfaces at the next call
      }
    }
    delete ex;
  };
  g_stats.last_result = reinterpret_cast<uintptr_t>(d.data);
  py::capsule cap(&e->managed, "dltensor", [](PyObject* c) {
    if (PyCapsule_IsValid(c, "dltensor")) {  // never consumed
      auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(c, "dltensor"));
      m->deleter(m);
    }
  });
  return torch_handles().from_dlpack(cap);
}

py::object to_caller(Tensor t, ArrayKind kind) {
  if (kind == ArrayKind::Torch) return to_torch(std::move(t));
  if (t.device() != Device::CPU) t = t.to(Device::CPU);
  return to_numpy(std::move(t));
}

std::optional<Device> device_arg(const std::optional<std::string>& device) {
  if (!device) return std::nullopt;
  return parse_device(*device);
}

// The core drives one GPU stream and shared library handles from one host thread at a time:
// every call into it holds this lock, taken after the GIL is released (so a thread waiting for
// it never holds the GIL that a running call's Ctrl-C check or progress callback needs).
std::timed_mutex g_core;

// Set by the interpreter's atexit (before it finalizes, while daemon threads may still take the
// GIL): a running call stops at its next check (between steps, batches, blocks) and unwinds while
// it still can; a new call waits forever (a daemon thread that must not touch a finalizing Python).
std::atomic<bool> g_exiting{false};
struct InterpreterExiting : std::runtime_error {
  InterpreterExiting() : std::runtime_error("handgrad: the interpreter is exiting; the call was stopped") {}
};

// Set by the atexit handler below once no call runs in the core: Python finalizes soon.
std::atomic<bool> g_finalizing{false};
// Threads of a call taking or holding the GIL (ReleaseGil's return, AcquireGil): the atexit handler
// below waits until none is left. Each counts itself first, then looks at the flags: either it
// sees them set, or the handler sees it counted (one taking the GIL once Python finalizes would be
// ended by pthread_exit inside C++ frames: std::terminate, or a crash).
std::atomic<int> g_with_gil{0};

// The GIL let go for the length of a scope, as py::gil_scoped_release, except that a thread coming
// back after Python began to finalize (a daemon thread) is never handed to it: CPython would end it
// with pthread_exit inside this noexcept destructor (std::terminate, the process aborts); it sleeps
// instead, and the process exits around it.
class ReleaseGil {
 public:
  ReleaseGil() : state_(PyEval_SaveThread()) {}
  ~ReleaseGil() {
    ++g_with_gil;
    if (g_finalizing) {
      --g_with_gil;
      while (true) std::this_thread::sleep_for(std::chrono::hours(1));
    }
    PyEval_RestoreThread(state_);
    --g_with_gil;  // it holds the GIL: from here on Python's own rules for its threads apply
  }
  ReleaseGil(const ReleaseGil&) = delete;
  ReleaseGil& operator=(const ReleaseGil&) = delete;

 private:
  PyThreadState* state_;
};

// The core lock, refusing a call from inside a running call on the same thread (a progress
// callback that calls handgrad): waiting for a lock this thread holds would never end.
class CoreLock;
thread_local CoreLock* t_core = nullptr;  // the lock this thread's running call holds
class CoreLock {
 public:
  CoreLock() {
    if (t_core) throw UserError("handgrad cannot be called from inside a progress callback of a running handgrad call");
    while (g_exiting) std::this_thread::sleep_for(std::chrono::hours(1));
    lock_ = std::unique_lock<std::timed_mutex>(g_core);
    t_core = this;
  }
  ~CoreLock() { t_core = nullptr; }
  CoreLock(const CoreLock&) = delete;
  CoreLock& operator=(const CoreLock&) = delete;
  void unlock() { lock_.unlock(); }
  void lock() { lock_.lock(); }

 private:
  std::unique_lock<std::timed_mutex> lock_;
};

// The GIL from inside a running call, or InterpreterExiting once the interpreter is exiting.
class AcquireGil {
 public:
  AcquireGil() {
    ++g_with_gil;
    if (g_exiting) {
      --g_with_gil;
      throw InterpreterExiting();
    }
    gil_.emplace();
  }
  ~AcquireGil() {
    gil_.reset();
    --g_with_gil;
  }
  AcquireGil(const AcquireGil&) = delete;
  AcquireGil& operator=(const AcquireGil&) = delete;

 private:
  std::optional<py::gil_scoped_acquire> gil_;
};

// Runs f (Python code: a progress callback) with the GIL and without the core lock, so that the
// threads a callback starts may call handgrad (between two steps of the running call) instead of
// waiting for it forever; the lock is taken back after the GIL is let go (never the GIL while
// waiting for the lock).
template <class F>
void with_python(F f) {
  if (g_exiting) throw InterpreterExiting();
  struct Relock {
    CoreLock* core;
    ~Relock() {
      if (core) core->lock();
    }
  } relock{t_core};
  if (relock.core) relock.core->unlock();
  AcquireGil gil;
  f();
}

// ---------------------------------------------------------------------------------------------
// Ctrl-C and progress
// ---------------------------------------------------------------------------------------------
// Between steps of a long call that runs without the GIL: take it, let Python run its signal
// handlers (a KeyboardInterrupt becomes a C++ exception that unwinds the run).
void check_signals() {
  AcquireGil gil;
  if (PyErr_CheckSignals() != 0) throw py::error_already_set();
}

// ---------------------------------------------------------------------------------------------
// einsum and its path
// ---------------------------------------------------------------------------------------------
EinsumOrder order_arg(const std::string& order) {
  if (order == "auto" || order == "optimal") return EinsumOrder::Auto;
  if (order == "greedy") return EinsumOrder::Greedy;
  if (order == "left-to-right" || order == "left_to_right") return EinsumOrder::LeftToRight;
  throw UserError("order must be 'auto', 'greedy' or 'left-to-right', got '" + order + "'");
}

py::object einsum_py(const std::string& equation, py::args operands, const std::string& order,
                     const std::optional<std::string>& device) {
  const EinsumOrder ord = order_arg(order);
  std::vector<Borrowed> in;
  ArrayKind kind = ArrayKind::Numpy;
  // Each converted operand is a copy, checked before it is made, alone and with the copies before it
  // (a hundred broadcast views of 60 MB each took 6 GB under a 1 GB budget).
  MemoryTally copies("einsum(): the operands' float32 copies");
  for (size_t i = 0; i < operands.size(); ++i) {
    in.push_back(borrow_array(operands[i], cat("einsum(): operand ", i), &copies));
    if (in.back().kind == ArrayKind::Torch) kind = ArrayKind::Torch;
  }
  const std::optional<Device> want = device_arg(device);
  Tensor out;
  {
    ReleaseGil nogil;
    CoreLock core;
    std::vector<Tensor> moved;  // operands copied to the requested device
    moved.reserve(in.size());   // so the pointers into it stay valid
    std::vector<const Tensor*> ptrs;
    for (Borrowed& b : in) {
      if (want && b.tensor.device() != *want) {
        moved.push_back(b.tensor.to(*want));
        ptrs.push_back(&moved.back());
      } else {
        ptrs.push_back(&b.tensor);
      }
    }
    out = einsum(equation, ptrs, nullptr, ord);
    // A numpy caller gets a host array whatever device computed it; a torch caller gets it on
    // the device its operands were on.
    if (kind == ArrayKind::Torch && !in.empty() && out.device() != in[0].tensor.device())
      out = out.to(in[0].tensor.device());
    synchronize(out.device());  // the caller's library may read it on another stream
  }
  return to_caller(std::move(out), kind);
}


Shape shape_of(py::handle arg, size_t i) {
  return reading(cat("contract_path(): operand ", i, "'s shape cannot be read"), [&] {
    Shape s;
    const py::object obj = py::hasattr(arg, "shape") ? py::object(arg.attr("shape")) : py::reinterpret_borrow<py::object>(arg);
    if (!py::isinstance<py::sequence>(obj) || py::isinstance<py::str>(obj) || py::isinstance<py::bytes>(obj))
      throw UserError(cat("contract_path(): operand ", i, " is neither an array nor a shape"));
    // Read one dimension at a time and stop at the first beyond the limit: a shape-like object may
    // iterate forever.
    for (py::handle d : obj) {
      HG_REQUIRE(s.size() < static_cast<size_t>(kMaxDims), "contract_path(): operand ", i,
                 " has more than ", kMaxDims, " dims; handgrad takes at most ", kMaxDims);
      if (!py::isinstance<py::int_>(d) && !py::hasattr(d, "__index__"))
        throw UserError(cat("contract_path(): operand ", i, "'s shape holds a non-integer"));
      const py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(d.ptr()));
      if (!index) {  // its __index__ raised: say so, with what it raised
        const py::error_already_set e;
        if (users_own(e)) throw e;
        throw UserError(cat("contract_path(): operand ", i, "'s shape holds a value whose __index__ failed: ", one_line(e)));
      }
      int overflow = 0;
      const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
      if (overflow != 0)
        throw UserError(cat("contract_path(): operand ", i, "'s shape holds ", std::string(py::str(index)),
                            ", beyond int64"));
      s.push_back(v);
    }
    return s;
  });
}

struct PathInfo {
  std::string equation, method;
  std::vector<std::pair<int, int>> contractions;  // positions in the current operand list (opt_einsum's path)
  std::vector<std::string> step_equations;
  std::vector<double> step_flops, step_sizes;
  double flops = 0, naive_flops = 0, largest = 0, naive_largest = 0, plan_ms = 0;

  std::string str() const {
    std::string s = cat("  Complete contraction:  ", equation, "\n  Method:  ", method, "\n  Optimized FLOP count:  ",
                        flops, "\n  Left-to-right FLOP count:  ", naive_flops, "\n  Speedup:  ",
                        flops > 0 ? naive_flops / flops : 1.0, "\n  Largest intermediate:  ", largest,
                        " elements\n", std::string(74, '-'), "\n");
    char line[256];
    std::snprintf(line, sizeof line, "%8s %16s %16s  %s\n", "step", "FLOPs", "result size", "contraction");
    s += line;
    for (size_t k = 0; k < step_equations.size(); ++k) {
      std::snprintf(line, sizeof line, "%8zu %16.6g %16.6g  %s\n", k + 1, step_flops[k], step_sizes[k],
                    step_equations[k].c_str());
      s += line;
    }
    return s;
  }
};

py::tuple contract_path_py(const std::string& equation, py::args operands, const std::string& order) {
  std::vector<Shape> shapes;
  for (size_t i = 0; i < operands.size(); ++i) shapes.push_back(shape_of(operands[i], i));
  const EinsumPath p = einsum_path(equation, shapes, order_arg(order));
  PathInfo info;
  info.equation = equation;
  info.method = p.plan.method;
  info.flops = p.plan.flops, info.largest = p.plan.largest;
  info.naive_flops = p.left_to_right.flops, info.naive_largest = p.left_to_right.largest;
  info.plan_ms = p.plan_ms;
  info.step_equations = p.step_equations;
  // The current operand list is always the live ids in increasing order (results are appended
  // with the next id), so an id's position is the count of live ids below it: a Fenwick tree over
  // the ids answers it in O(log n) (a list with find and erase took O(n^2) for many operands).
  const size_t ids = shapes.size() + p.plan.steps.size();
  std::vector<int> tree(ids + 1, 0);
  const auto add = [&](size_t id, int v) {
    for (size_t i = id + 1; i <= ids; i += i & (~i + 1)) tree[i] += v;
  };
  const auto below = [&](size_t id) {
    int n = 0;
    for (size_t i = id; i > 0; i -= i & (~i + 1)) n += tree[i];
    return n;
  };
  for (size_t i = 0; i < shapes.size(); ++i) add(i, 1);
  py::list path;
  for (size_t k = 0; k < p.plan.steps.size(); ++k) {
    const EinsumStep& st = p.plan.steps[k];
    int pa = below(st.a), pb = below(st.b);
    if (pa > pb) std::swap(pa, pb);
    add(st.a, -1), add(st.b, -1), add(shapes.size() + k, 1);
    path.append(py::make_tuple(pa, pb));
    info.contractions.emplace_back(pa, pb);
    info.step_flops.push_back(st.flops);
    info.step_sizes.push_back(st.size);
  }
  if (p.plan.steps.empty()) path.append(py::make_tuple(0));  // one operand: opt_einsum's [(0,)]
  return py::make_tuple(path, info);
}

// ---------------------------------------------------------------------------------------------
// State dicts: torch's names, numpy arrays, both ways
// ---------------------------------------------------------------------------------------------
py::dict state_to_dict(const StateDict& sd) {
  py::dict d;
  for (const auto& [name, t] : sd.entries) d[py::str(name)] = to_numpy(t.clone());
  return d;
}

// An array-like as a numpy array on the host (a torch tensor through .cpu().numpy()).
py::array host_array(const py::object& obj, const std::string& what) {
  py::object src = obj;
  if (reading(what + ": its type cannot be checked", [&] { return is_torch_tensor(src); })) {
    src = reading(what + " (a torch tensor) cannot be read", [&] {  // __torch_function__ runs in each call
      bool copied = false;
      py::object t = readable_torch(src, what, &copied).attr("cpu")();
      if (py::object(t.attr("dtype")).is(torch_handles().bfloat16)) {  // numpy has no bf16
        require_torch_copy(t, sizeof(float), what + " as float32");
        t = t.attr("float")();
      }
      return py::object(t.attr("numpy")());
    });
  }
  std::optional<py::array> a = to_array(src);
  if (!a) throw UserError(what + " is not an array");
  return std::move(*a);
}

// numpy.copyto, looked up once.
const py::object& numpy_copyto() {
  static const py::object* f = new py::object(py::module_::import("numpy").attr("copyto"));  // never destroyed
  return *f;
}

// A host tensor of `dtype` holding a copy of `a` (converted; int64 only from integers: sample
// indices and counters are never truncated floats).
Tensor host_tensor(const py::array& a, DType dtype, const std::string& what) {
  require_real(a, what);
  require_memory(static_cast<uint64_t>(a.size()) * (dtype == DType::I64 ? 8 : 4), what + " as a copy");
  const char kind = a.dtype().kind();
  HG_REQUIRE(dtype != DType::I64 || kind == 'i' || kind == 'u', what, " must be an array of integers");
  if (kind == 'u' && a.itemsize() == 8 && a.size() > 0)  // uint64 past int64 would wrap to negative
    HG_REQUIRE(py::int_(a.attr("max")()).cast<uint64_t>() <= uint64_t(INT64_MAX), what,
               " holds a value beyond int64");
  Tensor t = Tensor::empty(Shape(a.shape(), a.shape() + a.ndim()), Device::CPU, dtype);
  // Cast straight into the tensor, through a numpy view of it: one copy (a converted array copied
  // after took twice the memory at once).
  const py::capsule no_owner(t.raw(), [](void*) {});  // the tensor outlives the view
  py::array view(dtype == DType::F32 ? py::dtype::of<float>() : py::dtype::of<int64_t>(),
                 std::vector<py::ssize_t>(a.shape(), a.shape() + a.ndim()), t.raw(), no_owner);
  reading(cat(what, " cannot be read as an array of ", dtype_name(dtype)), [&] {
    numpy_copyto()(view, a, py::arg("casting") = "unsafe");
  });
  return t;
}

// A ResNet18 state dict from Python: torch's names; integer entries (num_batches_tracked) as int64,
// the rest as float32. Each name and shape is checked before its value is copied: an unknown name
// is refused (`strict`) or left out, not copied first (three large extra entries took 1.2 GB).
// The model's load checks the rest (missing names, dtypes) as it does for a checkpoint file.
StateDict dict_to_state(const py::dict& d, bool strict) {
  static const std::map<std::string, Shape> expected = [] {
    const auto shapes = resnet18_state_shapes();
    return std::map<std::string, Shape>(shapes.begin(), shapes.end());
  }();
  StateDict sd;
  for (auto [k, v] : d) {
    const std::string name = reading("a state dict key cannot be read as text", [&] { return std::string(py::str(k)); });
    const auto want = expected.find(name);
    if (want == expected.end()) {
      HG_REQUIRE(!strict, "checkpoint key '", name, "' is not a parameter of the adapted ResNet18");
      continue;
    }
    const std::string what = "state dict entry '" + name + "'";
    const py::array a = host_array(py::reinterpret_borrow<py::object>(v), what);
    const Shape shape(a.shape(), a.shape() + a.ndim());
    HG_REQUIRE(shape == want->second, "checkpoint key '", name, "' has shape ", shape_str(shape), ", the model needs ",
               shape_str(want->second));
    const char kind = a.dtype().kind();
    sd.add(name, host_tensor(a, kind == 'i' || kind == 'u' ? DType::I64 : DType::F32, what));
  }
  return sd;
}

// ---------------------------------------------------------------------------------------------
// Q2
// ---------------------------------------------------------------------------------------------
// Q2's inputs, copied once into host tensors of the dtype the trainer takes (which reads them in place).
std::optional<Tensor> host_copy(const py::object& obj, DType dtype, const char* what) {
  if (obj.is_none()) return std::nullopt;
  return host_tensor(host_array(obj, what), dtype, what);
}

py::dict train_mlp_py(py::object x, py::object y, py::object w1, py::object w2, py::object indices,
                      std::vector<float> lrs, int64_t iters, int64_t log_every, int64_t n, int64_t d, int64_t h,
                      uint64_t seed, const std::string& device, const std::string& impl) {
  MlpConfig cfg;
  cfg.lrs = std::move(lrs);
  cfg.iters = iters, cfg.log_every = log_every, cfg.n = n, cfg.d = d, cfg.h = h, cfg.seed = seed;
  cfg.device = parse_device(device);
  cfg.impl = impl;
  cfg.write_files = false, cfg.plot = false;
  cfg.throw_if_all_diverge = false;
  const std::optional<Tensor> tx = host_copy(x, DType::F32, "x"), ty = host_copy(y, DType::F32, "y"),
                              tw1 = host_copy(w1, DType::F32, "w1"), tw2 = host_copy(w2, DType::F32, "w2"),
                              tidx = host_copy(indices, DType::I64, "indices");
  cfg.x = tx ? &*tx : nullptr, cfg.y = ty ? &*ty : nullptr, cfg.w1 = tw1 ? &*tw1 : nullptr;
  cfg.w2 = tw2 ? &*tw2 : nullptr, cfg.indices = tidx ? &*tidx : nullptr;
  cfg.between_blocks = check_signals;
  MlpResult r;
  {
    ReleaseGil nogil;
    CoreLock core;
    r = run_mlp(cfg);
  }
  py::list models;
  for (MlpModelResult& m : r.models) {
    py::dict md;
    md["lr"] = m.lr;
    md["diverged_at"] = m.diverged_at < 0 ? py::object(py::none()) : py::object(py::int_(m.diverged_at));
    md["final_loss"] = m.final_loss;
    md["last1000_mean"] = m.last1000_mean;
    md["dataset_mse"] = m.dataset_mse;
    md["losses"] = to_numpy(Tensor::from_vector({static_cast<int64_t>(m.losses.size())}, m.losses));
    const auto w1_end = m.params.begin() + r.d * r.h;  // params: W1 (d x h) then W2 (h)
    md["w1"] = to_numpy(Tensor::from_vector({r.d, r.h}, std::vector<float>(m.params.begin(), w1_end)));
    md["w2"] = to_numpy(Tensor::from_vector({r.h}, std::vector<float>(w1_end, m.params.end())));
    models.append(md);
  }
  py::dict out;
  out["impl"] = r.impl;
  out["device"] = device_name(r.device);
  out["seconds"] = r.seconds;
  out["us_per_iter"] = r.us_per_iter;
  out["best"] = r.best < 0 ? py::object(py::none()) : py::object(py::int_(r.best));
  out["models"] = models;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Q3
// ---------------------------------------------------------------------------------------------
// torchvision's ResNet18 (1 channel, 10 classes) held by Python: a state dict in and out, and
// logits for a batch of images.
class PyResNet18 {
 public:
  PyResNet18(std::optional<py::dict> state, uint64_t seed, const std::string& device)
      : device_(parse_device(device)) {
    std::optional<StateDict> sd;
    if (state) sd = dict_to_state(*state, true);
    ReleaseGil nogil;
    CoreLock core;
    model_ = std::make_unique<ResNet18>(1, 28, 28, device_);
    model_->init_random(seed);
    if (sd) model_->load(*sd, true);
  }
  py::dict state_dict() const {
    StateDict sd;
    {
      ReleaseGil nogil;
      CoreLock core;
      sd = model_->state_dict();
    }
    return state_to_dict(sd);
  }
  void load(const py::dict& d, bool strict) {
    const StateDict sd = dict_to_state(d, strict);
    ReleaseGil nogil;
    CoreLock core;
    model_->load(sd, strict);
  }
  std::string device() const { return device_name(device_); }

  py::object forward(py::handle images) {
    Borrowed in = borrow_array(images, "images");
    const Shape& s = in.tensor.shape();
    HG_REQUIRE(s.size() == 4 && s[1] == 1 && s[0] > 0 && s[2] > 0 && s[3] > 0,
               "images must be [n, 1, H, W] with n, H, W > 0, got ", shape_str(s));
    const int64_t n = s[0], H = s[2], W = s[3], chunk = std::min<int64_t>(n, 256);
    std::vector<float> logits(n * 10);
    Tensor out;
    {
      ReleaseGil nogil;
      CoreLock core;
      Tensor images_dev = in.tensor.device() == device_ ? Tensor() : in.tensor.to(device_);
      const float* px = (images_dev.defined() ? images_dev : in.tensor).data<float>();
      if (chunk != batch_ || H != h_ || W != w_) {  // a model sized for these images, same weights
        auto sized = std::make_unique<ResNet18>(chunk, H, W, device_);
        sized->copy_weights(*model_);
        model_ = std::move(sized);  // only once it is whole: a failure above keeps the old model
        batch_ = chunk, h_ = H, w_ = W;
      }
      Buffer labels(sizeof(int32_t) * chunk, device_);
      zero_bytes(labels.get(), device_, labels.bytes());
      for (int64_t b = 0; b < n; b += chunk) {
        const int64_t m = std::min(chunk, n - b);
        int64_t correct = 0;
        model_->forward(px + b * H * W, static_cast<const int32_t*>(labels.get()), m, false, &correct);
        const std::vector<float> l = model_->logits();
        std::copy(l.begin(), l.begin() + m * 10, logits.begin() + b * 10);
        if (b + chunk < n) check_signals();  // Ctrl-C between chunks (20,000 images take ~40 s here)
      }
      out = Tensor::from_vector({n, 10}, logits);
      if (in.kind == ArrayKind::Torch && in.tensor.device() != Device::CPU) out = out.to(in.tensor.device());
      synchronize(out.device());
    }
    return to_caller(std::move(out), in.kind);
  }

 private:
  Device device_;
  std::unique_ptr<ResNet18> model_;
  int64_t batch_ = 1, h_ = 28, w_ = 28;
};

// The object a ResNet18 method was called on. pybind11 gives a method of an object made by
// __new__ without __init__ raw, unconstructed memory (and a method taken from the class may be
// called on anything): both are refused.
PyResNet18& built(py::handle self) {
  if (!py::isinstance<PyResNet18>(self))
    throw py::type_error("a ResNet18 method was called on a " + std::string(py::str(py::type::of(self).attr("__name__"))));
  if (!reinterpret_cast<py::detail::instance*>(self.ptr())->get_value_and_holder().holder_constructed())
    throw std::runtime_error("this ResNet18 was never initialised: create it with handgrad.ResNet18(...)");
  return self.cast<PyResNet18&>();
}

py::dict train_transfer_py(const std::string& data_dir, const std::optional<std::string>& weights,
                           std::optional<py::dict> state_dict, const std::string& freeze, int64_t batch_size, float lr,
                           float momentum, int64_t epochs, int64_t max_steps, bool eval, int64_t eval_limit,
                           uint64_t seed, const std::string& device, bool normalize, const std::string& conv1_init,
                           py::object progress, int64_t log_every, bool shuffle) {
  TransferConfig cfg;
  cfg.data_dir = data_dir;
  cfg.weights = weights.value_or("");
  cfg.freeze = freeze;
  cfg.batch_size = batch_size, cfg.lr = lr, cfg.momentum = momentum, cfg.epochs = epochs, cfg.max_steps = max_steps;
  cfg.eval = eval, cfg.eval_limit = eval_limit, cfg.seed = seed, cfg.normalize = normalize;
  cfg.conv1_init = conv1_init, cfg.log_every = log_every, cfg.shuffle = shuffle;
  cfg.device = parse_device(device);
  cfg.write_files = false, cfg.plot = false, cfg.keep_state = true;
  HG_REQUIRE(eval_limit >= 0, "eval_limit must not be negative, got ", eval_limit);
  std::optional<StateDict> initial;
  if (state_dict) initial = dict_to_state(*state_dict, true);
  cfg.initial_state = initial ? &*initial : nullptr;
  const bool callback = !progress.is_none() && PyCallable_Check(progress.ptr());
  cfg.progress = !callback && !progress.is_none() && py::bool_(progress);
  cfg.on_step = [&](const TransferProgress& p) {
    if (!callback) return check_signals();
    with_python([&] {
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      py::dict d;
      d["epoch"] = p.epoch, d["epochs"] = p.epochs, d["step"] = p.step, d["steps"] = p.steps;
      d["loss"] = p.loss, d["images_per_second"] = p.images_per_second, d["eta_seconds"] = p.eta_seconds;
      progress(d);
    });
  };
  cfg.between_eval_batches = check_signals;
  TransferResult r;
  {
    ReleaseGil nogil;
    CoreLock core;
    r = run_transfer_train(cfg);
  }
  py::dict out;
  py::list samples, losses;
  for (const auto& [s, l] : r.loss_curve) samples.append(s), losses.append(l);
  out["history"] = py::dict(py::arg("samples_seen") = samples, py::arg("train_loss") = losses);
  out["final_train_loss"] = r.final_train_loss;
  out["test_loss"] = eval ? py::object(py::float_(r.test_loss)) : py::object(py::none());
  out["test_accuracy"] = eval ? py::object(py::float_(r.test_accuracy)) : py::object(py::none());
  out["steps"] = r.steps;
  out["seconds"] = r.seconds;
  out["images_per_second"] = r.images_per_second;
  out["weights"] = r.weights;
  out["state_dict"] = state_to_dict(*r.state);
  return out;
}

py::tuple evaluate_transfer_py(const py::dict& state_dict, const std::string& data_dir, int64_t limit,
                               int64_t batch_size, const std::string& device, bool normalize) {
  TransferEvalConfig cfg;
  const StateDict sd = dict_to_state(state_dict, true);
  cfg.state = &sd;
  cfg.data_dir = data_dir, cfg.limit = limit, cfg.batch_size = batch_size, cfg.normalize = normalize;
  cfg.device = parse_device(device);
  cfg.quiet = true;
  cfg.between_batches = check_signals;
  HG_REQUIRE(batch_size > 0, "batch_size must be positive, got ", batch_size);
  std::pair<double, double> r;
  {
    ReleaseGil nogil;
    CoreLock core;
    r = run_transfer_eval(cfg);
  }
  return py::make_tuple(r.first, r.second);
}

// ---------------------------------------------------------------------------------------------
// Q4
// ---------------------------------------------------------------------------------------------
py::dict autodiff_py(const std::string& function, std::vector<double> point) {
  const AdGraph g = function.find('=') != std::string::npos ? parse_functions(function) : builtin_function(function);
  HG_REQUIRE(static_cast<int>(point.size()) == g.n_inputs, "the point has ", point.size(), " coordinates; ",
             g.n_inputs, " inputs expected");
  const AdResult r = autodiff(g, point);
  py::dict out = py::module_::import("json").attr("loads")(render_json(g, r));
  out["text"] = render_text(g, r);
  out["jacobian_forward"] = r.jacobian_forward;
  out["jacobian_reverse"] = r.jacobian_reverse;
  out["outputs"] = r.outputs;
  return out;
}

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "handgrad's C++ core (use the handgrad package, which documents every call)";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const UserError& e) {
      PyErr_SetString(PyExc_ValueError, one_line(e.what()).c_str());
    } catch (const InternalError& e) {
      PyErr_SetString(PyExc_RuntimeError, one_line(e.what()).c_str());
    }
  });
  m.attr("__version__") = HANDGRAD_VERSION;
  m.attr("commit") = build_commit();
  m.attr("built_with_cuda") = built_with_cuda();
  m.attr("FASHION_MNIST_MEAN") = kFashionMnistMean;
  m.attr("FASHION_MNIST_STD") = kFashionMnistStd;
  // At exit, before Python finalizes: stop a call running in a daemon thread at its next check and
  // wait (at most 10 s) until it has left the core, then keep the core, so that no thread is inside
  // handgrad (or takes the GIL from it) while the interpreter and the libraries are torn down.
  py::module_::import("atexit").attr("register")(py::cpp_function([] {
    g_exiting = true;
    {
      const py::gil_scoped_release nogil;  // (not ReleaseGil: this thread is the one that finalizes)
      const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      auto* held = new std::unique_lock<std::timed_mutex>(g_core, std::defer_lock);  // never released
      (void)held->try_lock_until(until);
      g_finalizing = true;
      while (g_with_gil > 0 && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
  }));
  m.def("cuda_available", &cuda_available);
  m.def("cuda_unavailable_reason", &cuda_unavailable_reason);

  m.def("einsum", &einsum_py, py::arg("equation"), py::kw_only(), py::arg("order") = "auto",
        py::arg("device") = py::none());
  m.def("contract_path", &contract_path_py, py::arg("equation"), py::kw_only(), py::arg("order") = "auto");
  py::class_<PathInfo>(m, "PathInfo")
      .def_readonly("equation", &PathInfo::equation)
      .def_readonly("method", &PathInfo::method)
      .def_readonly("contractions", &PathInfo::contractions)
      .def_readonly("step_equations", &PathInfo::step_equations)
      .def_readonly("step_flops", &PathInfo::step_flops)
      .def_readonly("step_sizes", &PathInfo::step_sizes)
      .def_readonly("opt_cost", &PathInfo::flops)
      .def_readonly("naive_cost", &PathInfo::naive_flops)
      .def_readonly("largest_intermediate", &PathInfo::largest)
      .def_readonly("plan_ms", &PathInfo::plan_ms)
      .def_property_readonly("speedup", [](const PathInfo& p) { return p.flops > 0 ? p.naive_flops / p.flops : 1.0; })
      .def("__str__", &PathInfo::str)
      .def("__repr__", [](const PathInfo& p) { return "<handgrad.PathInfo " + p.equation + ">"; });

  m.def("train_mlp", &train_mlp_py, py::arg("x"), py::arg("y"), py::arg("w1"), py::arg("w2"), py::arg("indices"),
        py::arg("lrs"), py::arg("iters"), py::arg("log_every"), py::arg("n"), py::arg("d"), py::arg("h"),
        py::arg("seed"), py::arg("device"), py::arg("impl"));

  py::class_<PyResNet18>(m, "ResNet18", R"doc(torchvision's ResNet18 adapted to FashionMNIST (1-channel input, 10 classes), on handgrad.

    ResNet18(state_dict=None, *, seed=2024, device="auto")

`state_dict` takes torchvision's names and shapes (a dict of numpy arrays or torch tensors, e.g.
`torchvision.models.resnet18(num_classes=10)` with a 1-channel conv1); without it, torchvision's
random initialisation from `seed`. `model.state_dict()` returns a dict of numpy arrays that
`torch.nn.Module.load_state_dict` takes (wrap each in torch.from_numpy). `model(images)` gives the
logits [n, 10] of images [n, 1, H, W] in evaluation mode (running BatchNorm statistics).)doc")
      .def(py::init<std::optional<py::dict>, uint64_t, const std::string&>(), py::arg("state_dict") = py::none(),
           py::kw_only(), py::arg("seed") = 2024, py::arg("device") = "auto")
      .def("state_dict", [](py::handle self) { return built(self).state_dict(); })
      .def(
          "load_state_dict", [](py::handle self, const py::dict& d, bool strict) { built(self).load(d, strict); },
          py::arg("state_dict"), py::arg("strict") = true)
      .def("forward", [](py::handle self, py::handle images) { return built(self).forward(images); }, py::arg("images"))
      .def("__call__", [](py::handle self, py::handle images) { return built(self).forward(images); }, py::arg("images"))
      .def_property_readonly("device", [](py::handle self) { return built(self).device(); });
  m.def("train_transfer", &train_transfer_py, py::arg("data_dir"), py::arg("weights"), py::arg("state_dict"),
        py::arg("freeze"), py::arg("batch_size"), py::arg("lr"), py::arg("momentum"), py::arg("epochs"),
        py::arg("max_steps"), py::arg("eval"), py::arg("eval_limit"), py::arg("seed"), py::arg("device"),
        py::arg("normalize"), py::arg("conv1_init"), py::arg("progress"), py::arg("log_every"), py::arg("shuffle"));
  m.def("imagenet_weights_path", [] {  // a path, as os.fsdecode gives it (TORCH_HOME need not be UTF-8)
    const std::string path = locate_imagenet_weights();
    return py::reinterpret_steal<py::str>(PyUnicode_DecodeFSDefaultAndSize(path.data(), static_cast<Py_ssize_t>(path.size())));
  });
  m.def("evaluate_transfer", &evaluate_transfer_py, py::arg("state_dict"), py::arg("data_dir"), py::arg("limit"),
        py::arg("batch_size"), py::arg("device"), py::arg("normalize"));

  m.def("autodiff", &autodiff_py, py::arg("function"), py::arg("point"));

  // For tests: what the interop did (inputs read in place or converted; the last result's buffer)
  // and where handgrad would read an array from.
  m.def("_stats", [] {
    py::dict d;
    d["inputs_borrowed"] = g_stats.borrowed.load();
    d["inputs_converted"] = g_stats.converted.load();
    d["last_result_address"] = g_stats.last_result.load();
    return d;
  });
  m.def("_input_address", [](py::handle obj) {
    Borrowed b = borrow_array(obj, "array");
    return py::make_tuple(reinterpret_cast<uintptr_t>(b.tensor.raw()), b.converted);
  });
  // The same einsum call timed in C++ (no Python in the loop): the peer of the Python call's time.
  m.def("_time_einsum_cpp", [](const std::string& equation, py::args operands, int reps) {
    std::vector<Borrowed> in;
    std::vector<const Tensor*> ptrs;
    for (size_t i = 0; i < operands.size(); ++i) in.push_back(borrow_array(operands[i], "operand"));
    for (Borrowed& b : in) ptrs.push_back(&b.tensor);
    ReleaseGil nogil;
    CoreLock core;
    einsum(equation, ptrs);  // warm-up
    const auto t0 = std::chrono::steady_clock::now();
    for (int r = 0; r < reps; ++r) einsum(equation, ptrs);
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
  }, py::arg("equation"), py::kw_only(), py::arg("reps") = 1000);
}
