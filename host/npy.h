// NumPy .npy files (format versions 1.0, 2.0 and 3.0): float32, float64, int32 and int64,
// little-endian, C order. Reading is strict: a malformed, truncated, oversized or lying file
// is a UserError naming the file and what is wrong, never a crash or an out-of-bounds read.
#pragma once
#include <string>

#include "host/tensor.h"

namespace handgrad {

struct NpyArray {
  std::string descr;  // as in the file: "<f4", "<f8", "<i4", "<i8"
  Shape shape;
  Tensor data;        // float32 for <f4/<f8 (f8 narrowed), int64 for <i4/<i8 (i4 widened)
};

NpyArray read_npy(const std::string& path);
// Float32 tensor from a float .npy (an integer file is an error naming the file).
Tensor read_npy_f32(const std::string& path);
// Int64 tensor from an integer .npy.
Tensor read_npy_i64(const std::string& path);

// Writes <f4 or <i8 (by the tensor's dtype), version 1.0, whole or not at all (temp + rename).
void write_npy(const std::string& path, const Tensor& t);

}  // namespace handgrad
