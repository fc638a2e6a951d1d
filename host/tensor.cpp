#include "host/tensor.h"

#include "host/memory.h"

#include <algorithm>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <unordered_map>

#ifdef HANDGRAD_WITH_CUDA
#include "kernels/common.cuh"
#include "kernels/cuda_check.h"
#endif

namespace handgrad {

size_t dtype_size(DType t) { return t == DType::F32 ? 4 : 8; }
const char* dtype_name(DType t) { return t == DType::F32 ? "float32" : "int64"; }

int64_t shape_numel(const Shape& s) {
  HG_REQUIRE(s.size() <= static_cast<size_t>(kMaxDims), "tensors have at most ", kMaxDims,
             " dimensions, got ", s.size());
  for (int64_t d : s) HG_REQUIRE(d >= 0, "negative dimension in shape ", shape_str(s));
  if (std::find(s.begin(), s.end(), 0) != s.end()) return 0;  // however large the other dims
  int64_t n = 1;
  for (int64_t d : s) {
    if (n > std::numeric_limits<int64_t>::max() / 8 / d)
      throw UserError(cat("shape ", shape_str(s), " is too large"));
    n *= d;
  }
  return n;
}

std::string shape_str(const Shape& s) {
  std::string out = "[";
  for (size_t i = 0; i < s.size(); ++i) out += (i ? ", " : "") + std::to_string(s[i]);
  return out + "]";
}

// ---------------------------------------------------------------------------------------------
// A small caching allocator. Freed blocks are kept per device and size class and handed out
// again, so code that allocates in a loop (einsum's intermediates, the CLI) does not pay for
// page faults on the host or for cudaMalloc/cudaFree (which synchronises the device) each time.
// handgrad runs all GPU work on one stream, so a block freed after its last use is safe to
// reuse by work queued later. At most kPoolCap bytes per device stay cached.
namespace {
constexpr size_t kPoolCap = size_t(2) << 30;

// In a SIMT build device buffers are exact and never cached: the emulator checks each kernel
// access against the allocation's own size, and a freed buffer's pointer must stop being valid.
#ifdef HANDGRAD_SIMT
constexpr bool kExactDeviceBuffers = true;
#else
constexpr bool kExactDeviceBuffers = false;
#endif

size_t size_class(size_t bytes, Device device) {
  if (kExactDeviceBuffers && device == Device::CUDA) return bytes;
  const size_t q = bytes < (size_t(1) << 20) ? 512 : (size_t(1) << 20);
  return (bytes + q - 1) / q * q;
}

struct Pool {
  std::mutex mu;
  std::unordered_multimap<size_t, void*> free_blocks;
  size_t cached = 0;
};
Pool& pool(Device d) {
  // Never destroyed: buffers may be released during static destruction, after which a pool
  // (and, for GPU blocks, the CUDA context) must not be touched.
  static Pool* const pools = new Pool[2];
  return pools[d == Device::CUDA ? 1 : 0];
}

void* raw_alloc(size_t bytes, Device device) {
  if (device == Device::CPU) {
    require_memory(bytes, "a host buffer");
    // 64-byte alignment: whole cache lines, and aligned vector loads in the CPU twins.
    void* p = std::aligned_alloc(64, bytes);
    if (!p) throw UserError(cat("out of host memory allocating ", bytes, " bytes"));
    return p;
  }
#ifdef HANDGRAD_WITH_CUDA
  void* p = nullptr;
  cudaError_t err = cudaMalloc(&p, bytes);
  if (err == cudaErrorMemoryAllocation) {
    cudaGetLastError();
    release_cached_memory();  // give the cache back and try once more
    err = cudaMalloc(&p, bytes);
    if (err == cudaErrorMemoryAllocation) {
      cudaGetLastError();
      throw UserError(cat("out of GPU memory allocating ", bytes, " bytes"));
    }
  }
  CUDA_CHECK(err);
  return p;
#else
  throw UserError("CUDA tensor requested, but this handgrad was built without CUDA");
#endif
}

void raw_free(void* p, Device device) {
  if (device == Device::CPU) {
    std::free(p);
  } else {
#ifdef HANDGRAD_WITH_CUDA
    cudaFree(p);  // never throws: called from destructors
#endif
  }
}
}  // namespace

void release_cached_memory(Device d) {
  Pool& p = pool(d);
  std::lock_guard<std::mutex> lock(p.mu);
  for (auto& [bytes, ptr] : p.free_blocks) raw_free(ptr, d);
  p.free_blocks.clear();
  p.cached = 0;
}

uint64_t cached_memory(Device d) {
  Pool& p = pool(d);
  std::lock_guard<std::mutex> lock(p.mu);
  return p.cached;
}

void release_cached_memory() {
  for (Device d : {Device::CPU, Device::CUDA}) release_cached_memory(d);
}

Buffer::Buffer(size_t bytes, Device device) : bytes_(bytes), device_(device) {
  if (bytes == 0) return;
  const size_t cls = size_class(bytes, device);
  {
    Pool& p = pool(device);
    std::lock_guard<std::mutex> lock(p.mu);
    auto it = p.free_blocks.find(cls);
    if (it != p.free_blocks.end()) {
      ptr_ = it->second;
      p.free_blocks.erase(it);
      p.cached -= cls;
    }
  }
  if (!ptr_) ptr_ = raw_alloc(cls, device);  // (on the host, require_memory gives the cache back under a set budget)
  if (device == Device::CPU) count_host_bytes_held(static_cast<int64_t>(cls));
}

Buffer Buffer::borrow(void* ptr, size_t bytes, Device device) {
  Buffer b;
  b.ptr_ = ptr, b.bytes_ = bytes, b.device_ = device, b.borrowed_ = true;
  return b;
}

Buffer::~Buffer() {
  if (!ptr_ || borrowed_) return;
  const size_t cls = size_class(bytes_, device_);
  if (device_ == Device::CPU) count_host_bytes_held(-static_cast<int64_t>(cls));
  Pool& p = pool(device_);
  if (!(kExactDeviceBuffers && device_ == Device::CUDA)) {
    std::lock_guard<std::mutex> lock(p.mu);
    if (p.cached + cls <= kPoolCap) {
      p.free_blocks.emplace(cls, ptr_);
      p.cached += cls;
      return;
    }
  }
  raw_free(ptr_, device_);
}

void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes) {
  if (bytes == 0) return;
  if (dst_dev == Device::CPU && src_dev == Device::CPU) {
    std::memcpy(dst, src, bytes);
    return;
  }
#ifdef HANDGRAD_WITH_CUDA
  cudaMemcpyKind kind = dst_dev == Device::CUDA
                            ? (src_dev == Device::CUDA ? cudaMemcpyDeviceToDevice
                                                       : cudaMemcpyHostToDevice)
                            : cudaMemcpyDeviceToHost;
  CUDA_CHECK(cudaMemcpy(dst, src, bytes, kind));
#else
  throw UserError("CUDA copy requested, but this handgrad was built without CUDA");
#endif
}

void zero_bytes(void* dst, Device device, size_t bytes) {
  if (bytes == 0) return;
  if (device == Device::CPU) {
    std::memset(dst, 0, bytes);
    return;
  }
#ifdef HANDGRAD_WITH_CUDA
  CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, cuda::stream()));
#else
  throw UserError("CUDA memory, but this handgrad was built without CUDA");
#endif
}

void synchronize(Device device) {
#ifdef HANDGRAD_WITH_CUDA
  if (device == Device::CUDA) CUDA_CHECK(cudaDeviceSynchronize());
#else
  (void)device;
#endif
}

// ---------------------------------------------------------------------------------------------
Tensor Tensor::empty(const Shape& shape, Device device, DType dtype) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  if (device == Device::CPU)
    require_memory(static_cast<uint64_t>(t.numel_) * dtype_size(dtype), cat("a tensor of shape ", shape_str(shape)));
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.defined_ = true;
  t.buf_ = Buffer(static_cast<size_t>(t.numel_) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::borrow(void* data, const Shape& shape, DType dtype, Device device) {
  Tensor t;
  t.numel_ = shape_numel(shape);
  t.shape_ = shape;
  t.dtype_ = dtype;
  t.defined_ = true;
  t.buf_ = Buffer::borrow(data, static_cast<size_t>(t.numel_) * dtype_size(dtype), device);
  return t;
}

Tensor Tensor::zeros(const Shape& shape, Device device, DType dtype) {
  Tensor t = empty(shape, device, dtype);
  if (t.nbytes() == 0) return t;
  if (device == Device::CPU) {
    std::memset(t.raw(), 0, t.nbytes());
  } else {
#ifdef HANDGRAD_WITH_CUDA
    CUDA_CHECK(cudaMemset(t.raw(), 0, t.nbytes()));
#endif
  }
  return t;
}

Tensor Tensor::full(const Shape& shape, float value, Device device) {
  Tensor host = empty(shape, Device::CPU);
  float* p = host.data<float>();
  for (int64_t i = 0; i < host.numel(); ++i) p[i] = value;
  return device == Device::CPU ? std::move(host) : host.to(device);
}

Tensor Tensor::from_vector(const Shape& shape, const std::vector<float>& values, Device device) {
  Tensor host = empty(shape, Device::CPU);
  HG_REQUIRE(static_cast<int64_t>(values.size()) == host.numel(), "from_vector: ",
             values.size(), " values for shape ", shape_str(shape));
  if (!values.empty()) std::memcpy(host.raw(), values.data(), host.nbytes());
  return device == Device::CPU ? std::move(host) : host.to(device);
}

int64_t Tensor::size(int dim) const {
  int n = ndim();
  if (dim < 0) dim += n;
  HG_ASSERT(dim >= 0 && dim < n, "dim ", dim, " of a rank-", n, " tensor");
  return shape_[dim];
}

void Tensor::check_dtype(DType want) const {
  HG_ASSERT(defined_, "use of an undefined tensor");
  HG_ASSERT(dtype_ == want, "tensor is ", dtype_name(dtype_), ", accessed as ",
            dtype_name(want));
}

void Tensor::reshape_(const Shape& new_shape) {
  HG_REQUIRE(shape_numel(new_shape) == numel_, "cannot reshape ", shape_str(shape_), " to ",
             shape_str(new_shape));
  shape_ = new_shape;
}

Tensor Tensor::clone() const { return to(device()); }

Tensor Tensor::to(Device dst) const {
  HG_ASSERT(defined_, "copy of an undefined tensor");
  Tensor out = empty(shape_, dst, dtype_);
  copy_bytes(out.raw(), dst, raw(), device(), nbytes());
  return out;
}

void Tensor::copy_from(const Tensor& src) {
  HG_ASSERT(src.shape_ == shape_ && src.dtype_ == dtype_, "copy_from ", shape_str(src.shape_),
            " into ", shape_str(shape_));
  copy_bytes(raw(), device(), src.raw(), src.device(), nbytes());
}

std::vector<float> Tensor::to_vector() const {
  std::vector<float> v(static_cast<size_t>(numel_));
  copy_bytes(v.data(), Device::CPU, data<float>(), device(), nbytes());
  return v;
}

}  // namespace handgrad
