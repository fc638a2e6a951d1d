// Tensor: a contiguous, row-major N-D array (rank 0..64) of float32 or int64, on the CPU or a
// CUDA device. Ownership is move-only RAII: copying a tensor by accident is a compile error;
// copies are explicit (clone(), to(device)).
#pragma once
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "host/device.h"
#include "kernels/common.h"
#include "kernels/error.h"

namespace handgrad {


enum class DType { F32, I64 };
size_t dtype_size(DType t);
const char* dtype_name(DType t);
template <typename T> constexpr DType dtype_of();
template <> constexpr DType dtype_of<float>() { return DType::F32; }
template <> constexpr DType dtype_of<int64_t>() { return DType::I64; }

int64_t shape_numel(const Shape& s);          // checks for overflow and negative sizes
std::string shape_str(const Shape& s);        // "[2, 3, 4]"

// Raw bytes on one device. Move-only; frees itself.
class Buffer {
 public:
  Buffer() = default;
  Buffer(size_t bytes, Device device);
  // Memory someone else owns (a numpy array, a torch tensor): used in place, never freed here;
  // the owner keeps it alive for as long as the buffer is used.
  static Buffer borrow(void* ptr, size_t bytes, Device device);
  ~Buffer();
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;
  Buffer(Buffer&& o) noexcept { swap(o); }
  Buffer& operator=(Buffer&& o) noexcept {
    Buffer tmp(std::move(o));
    swap(tmp);
    return *this;
  }
  void* get() const { return ptr_; }
  size_t bytes() const { return bytes_; }
  Device device() const { return device_; }

 private:
  void swap(Buffer& o) noexcept {
    std::swap(ptr_, o.ptr_);
    std::swap(bytes_, o.bytes_);
    std::swap(device_, o.device_);
    std::swap(borrowed_, o.borrowed_);
  }
  void* ptr_ = nullptr;
  bool borrowed_ = false;
  size_t bytes_ = 0;
  Device device_ = Device::CPU;
};

class Tensor {
 public:
  Tensor() = default;
  static Tensor empty(const Shape& shape, Device device = Device::CPU, DType dtype = DType::F32);
  static Tensor zeros(const Shape& shape, Device device = Device::CPU, DType dtype = DType::F32);
  // Fill with `value` (float tensors only; any device).
  static Tensor full(const Shape& shape, float value, Device device = Device::CPU);
  static Tensor from_vector(const Shape& shape, const std::vector<float>& values,
                            Device device = Device::CPU);
  // A tensor over contiguous memory someone else owns (see Buffer::borrow): no copy.
  static Tensor borrow(void* data, const Shape& shape, DType dtype, Device device);

  Tensor(Tensor&&) noexcept = default;
  Tensor& operator=(Tensor&&) noexcept = default;
  Tensor(const Tensor&) = delete;
  Tensor& operator=(const Tensor&) = delete;

  const Shape& shape() const { return shape_; }
  int ndim() const { return static_cast<int>(shape_.size()); }
  int64_t size(int dim) const;
  int64_t numel() const { return numel_; }
  size_t nbytes() const { return static_cast<size_t>(numel_) * dtype_size(dtype_); }
  DType dtype() const { return dtype_; }
  Device device() const { return buf_.device(); }
  bool defined() const { return defined_; }

  template <typename T> T* data() {
    check_dtype(dtype_of<T>());
    return static_cast<T*>(buf_.get());
  }
  template <typename T> const T* data() const {
    check_dtype(dtype_of<T>());
    return static_cast<const T*>(buf_.get());
  }
  void* raw() { return buf_.get(); }
  const void* raw() const { return buf_.get(); }

  // Same storage, another shape with the same number of elements.
  void reshape_(const Shape& new_shape);

  Tensor clone() const;                 // same device
  Tensor to(Device device) const;       // always a copy
  void copy_from(const Tensor& src);    // shapes and dtypes must match; any devices

  // Host copy of the values, for tests and printing (float tensors).
  std::vector<float> to_vector() const;

 private:
  void check_dtype(DType want) const;
  Shape shape_;
  int64_t numel_ = 0;
  DType dtype_ = DType::F32;
  bool defined_ = false;
  Buffer buf_;
};

// Free the blocks the allocator keeps cached for reuse (host and GPU, or one device's).
void release_cached_memory();
void release_cached_memory(Device device);
// The bytes of freed blocks the allocator keeps cached for reuse on `device`.
uint64_t cached_memory(Device device);

// Copy `bytes` between any two devices (synchronous).
void copy_bytes(void* dst, Device dst_dev, const void* src, Device src_dev, size_t bytes);

// Zero `bytes` at dst: on the GPU queued on handgrad's stream, like a kernel (no synchronisation).
void zero_bytes(void* dst, Device device, size_t bytes);

// Block until all queued GPU work is done (no-op on the CPU).
void synchronize(Device device);

}  // namespace handgrad
