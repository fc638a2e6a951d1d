#include "host/npy.h"

#include "host/atomic_file.h"

#include <cstdio>
#include <fstream>
#include <limits>
#include <sstream>
#include <unistd.h>

namespace handgrad {

namespace {

[[noreturn]] void bad(const std::string& path, const std::string& why) {
  throw UserError(cat(path, ": not a valid .npy file: ", why));
}

// The header is a Python dict literal, e.g.
//   {'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }
// Parsed by a tiny tokenizer that accepts exactly that grammar.
struct HeaderParser {
  const std::string& s;
  const std::string& path;
  size_t i = 0;

  void ws() {
    while (i < s.size() && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) ++i;
  }
  bool eat(char c) {
    ws();
    if (i < s.size() && s[i] == c) {
      ++i;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!eat(c)) bad(path, cat("header: expected '", c, "' at byte ", i, " of \"", s, "\""));
  }
  std::string str() {
    ws();
    if (i >= s.size() || (s[i] != '\'' && s[i] != '"')) bad(path, "header: expected a string");
    const char q = s[i++];
    const size_t start = i;
    while (i < s.size() && s[i] != q) ++i;
    if (i >= s.size()) bad(path, "header: unterminated string");
    return s.substr(start, i++ - start);
  }
  bool boolean() {
    ws();
    if (s.compare(i, 4, "True") == 0) { i += 4; return true; }
    if (s.compare(i, 5, "False") == 0) { i += 5; return false; }
    bad(path, "header: fortran_order must be True or False");
  }
  Shape shape() {
    expect('(');
    Shape dims;
    while (true) {
      ws();
      if (eat(')')) break;
      if (i >= s.size() || s[i] < '0' || s[i] > '9') bad(path, "header: shape must be a tuple of non-negative integers");
      int64_t v = 0;
      while (i < s.size() && s[i] >= '0' && s[i] <= '9') {
        if (v > (std::numeric_limits<int64_t>::max() - 9) / 10) bad(path, "header: dimension too large");
        v = v * 10 + (s[i++] - '0');
      }
      if (i < s.size() && s[i] == 'L') ++i;  // Python 2 longs
      dims.push_back(v);
      if (dims.size() > static_cast<size_t>(kMaxDims)) bad(path, cat("more than ", kMaxDims, " dimensions"));
      if (eat(')')) break;
      expect(',');
    }
    return dims;
  }
};

}  // namespace

NpyArray read_npy(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError(cat(path, ": cannot open file"));
  f.seekg(0, std::ios::end);
  const std::streamoff file_size = f.tellg();
  f.seekg(0);

  char magic[8];
  if (file_size < 10 || !f.read(magic, 8)) bad(path, "file too short for a .npy header");
  if (std::string(magic, 6) != "\x93NUMPY") bad(path, "missing the \\x93NUMPY magic");
  const int major = static_cast<unsigned char>(magic[6]);
  uint64_t header_len = 0;
  size_t prefix = 0;
  if (major == 1) {
    unsigned char b[2];
    if (!f.read(reinterpret_cast<char*>(b), 2)) bad(path, "truncated header length");
    header_len = b[0] | (b[1] << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    unsigned char b[4];
    if (!f.read(reinterpret_cast<char*>(b), 4)) bad(path, "truncated header length");
    header_len = b[0] | (b[1] << 8) | (uint64_t(b[2]) << 16) | (uint64_t(b[3]) << 24);
    prefix = 12;
  } else {
    bad(path, cat("unsupported format version ", major, ".", int(magic[7])));
  }
  if (header_len > 1u << 20 || static_cast<std::streamoff>(prefix + header_len) > file_size)
    bad(path, cat("header length ", header_len, " runs past the end of the file"));
  std::string header(header_len, '\0');
  if (!f.read(header.data(), static_cast<std::streamsize>(header_len))) bad(path, "truncated header");

  HeaderParser p{header, path};
  NpyArray arr;
  bool have_descr = false, have_order = false, have_shape = false, fortran = false;
  p.expect('{');
  while (!p.eat('}')) {
    const std::string key = p.str();
    p.expect(':');
    if (key == "descr") {
      arr.descr = p.str();
      have_descr = true;
    } else if (key == "fortran_order") {
      fortran = p.boolean();
      have_order = true;
    } else if (key == "shape") {
      arr.shape = p.shape();
      have_shape = true;
    } else {
      bad(path, cat("header: unexpected key '", key, "'"));
    }
    if (!p.eat(',')) {
      p.expect('}');
      break;
    }
  }
  if (!have_descr || !have_order || !have_shape)
    bad(path, "header must have 'descr', 'fortran_order' and 'shape'");
  if (fortran) bad(path, "Fortran-ordered arrays are not supported (save with C order)");

  size_t item = 0;
  DType dtype = DType::F32;
  if (arr.descr == "<f4") item = 4;
  else if (arr.descr == "<f8") item = 8;
  else if (arr.descr == "<i4") { item = 4; dtype = DType::I64; }
  else if (arr.descr == "<i8") { item = 8; dtype = DType::I64; }
  else bad(path, cat("unsupported dtype '", arr.descr, "' (need <f4, <f8, <i4 or <i8)"));

  int64_t n = 1;
  for (int64_t d : arr.shape) {  // each dimension on its own too: a 0 elsewhere keeps n at 0
    if (d > (int64_t(1) << 40) || (d != 0 && n > (std::numeric_limits<int64_t>::max() / 16) / d))
      bad(path, "shape too large");
    n *= d;
  }
  const uint64_t payload = static_cast<uint64_t>(n) * item;
  const uint64_t have = static_cast<uint64_t>(file_size) - prefix - header_len;
  if (have != payload)
    bad(path, cat("shape ", shape_str(arr.shape), " of ", arr.descr, " needs ", payload,
                  " data bytes, the file has ", have));

  std::vector<char> raw(payload);
  if (payload && !f.read(raw.data(), static_cast<std::streamsize>(payload))) bad(path, "truncated data");
  arr.data = Tensor::empty(arr.shape, Device::CPU, dtype);
  if (payload == 0) return arr;  // an empty array: no bytes to copy (and no buffer to copy into)
  if (arr.descr == "<f4") {
    std::memcpy(arr.data.raw(), raw.data(), payload);
  } else if (arr.descr == "<f8") {
    float* out = arr.data.data<float>();
    for (int64_t k = 0; k < n; ++k) {
      double v;
      std::memcpy(&v, raw.data() + 8 * k, 8);
      out[k] = static_cast<float>(v);
    }
  } else if (arr.descr == "<i8") {
    std::memcpy(arr.data.raw(), raw.data(), payload);
  } else {
    int64_t* out = arr.data.data<int64_t>();
    for (int64_t k = 0; k < n; ++k) {
      int32_t v;
      std::memcpy(&v, raw.data() + 4 * k, 4);
      out[k] = v;
    }
  }
  return arr;
}

Tensor read_npy_f32(const std::string& path) {
  NpyArray a = read_npy(path);
  HG_REQUIRE(a.data.dtype() == DType::F32, path, ": expected a float32 or float64 array, got ",
             a.descr);
  return std::move(a.data);
}

Tensor read_npy_i64(const std::string& path) {
  NpyArray a = read_npy(path);
  HG_REQUIRE(a.data.dtype() == DType::I64, path, ": expected an int32 or int64 array, got ", a.descr);
  return std::move(a.data);
}

void write_npy(const std::string& path, const Tensor& t) {
  const Tensor host = t.device() == Device::CPU ? Tensor() : t.to(Device::CPU);
  const Tensor& src = t.device() == Device::CPU ? t : host;
  // Python's tuple syntax: "()", "(3,)", "(2, 3)".
  const size_t rank = src.shape().size();
  std::string shape = "(";
  for (size_t d = 0; d < rank; ++d)
    shape += std::to_string(src.shape()[d]) + (rank == 1 ? "," : d + 1 < rank ? ", " : "");
  shape += ")";
  std::string header = cat("{'descr': '", src.dtype() == DType::F32 ? "<f4" : "<i8",
                           "', 'fortran_order': False, 'shape': ", shape, ", }");
  // Pad with spaces so that the data starts on a 64-byte boundary; end with '\n'.
  const size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::string bytes = "\x93NUMPY";
  bytes += '\x01';
  bytes += '\x00';
  bytes += static_cast<char>(header.size() & 0xff);
  bytes += static_cast<char>(header.size() >> 8);
  bytes += header;
  // The data goes out from the tensor itself: no second full copy of a large result.
  write_file_atomic(path, {bytes, std::string_view(static_cast<const char*>(src.raw()), src.nbytes())});
}

}  // namespace handgrad
