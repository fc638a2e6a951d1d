#include "host/checkpoint.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <string_view>
#include <unordered_map>
#include <variant>

#include "host/atomic_file.h"
#include "host/memory.h"

namespace handgrad {

const Tensor* StateDict::find(const std::string& name) const {
  for (const auto& [n, t] : entries)
    if (n == name) return &t;
  return nullptr;
}

void StateDict::add(const std::string& name, Tensor t) { entries.emplace_back(name, std::move(t)); }

namespace {

// The whole file, read once: a regular file (not a folder, /dev/zero or a pipe, which have no
// size to check or no end), within the memory budget.
std::string read_all(const std::string& path) {
  std::error_code ec;
  const auto st = std::filesystem::status(path, ec);
  if (ec || !std::filesystem::exists(st)) throw UserError(cat(path, ": cannot open file"));
  HG_REQUIRE(std::filesystem::is_regular_file(st), path, ": not a regular file (a checkpoint is a file)");
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) throw UserError(cat(path, ": cannot read its size (", ec.message(), ")"));
  require_memory(size, cat(path, " (read whole)"));
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError(cat(path, ": cannot open file"));
  std::string bytes(size, '\0');
  f.read(bytes.data(), static_cast<std::streamsize>(size));
  HG_REQUIRE(static_cast<uint64_t>(f.gcount()) == size, path, ": changed while being read");
  return bytes;
}

uint64_t le(const std::string& b, size_t at, int n) {
  uint64_t v = 0;
  for (int i = n - 1; i >= 0; --i) v = v << 8 | static_cast<uint8_t>(b[at + i]);
  return v;
}

// ------------------------------------------------------------------------------------------
// Zip (stored entries only, as torch.save writes them)
// ------------------------------------------------------------------------------------------
struct ZipEntry {
  std::string name;
  size_t offset = 0, size = 0;  // of the data, in the file
};

std::vector<ZipEntry> read_zip_directory(const std::string& b, const std::string& path) {
  auto bad = [&](const std::string& why) { return UserError(cat(path, ": not a valid torch.save zip archive: ", why)); };
  if (b.size() < 22) throw bad("too short");
  // The end-of-central-directory record: the last 22 bytes plus a comment of up to 64 KiB.
  size_t eocd = std::string::npos;
  for (size_t i = b.size() - 22 + 1; i-- > 0 && b.size() - i <= 22 + 65535;)
    if (le(b, i, 4) == 0x06054b50) {
      eocd = i;
      break;
    }
  if (eocd == std::string::npos) throw bad("no end-of-central-directory record");
  const uint64_t count = le(b, eocd + 10, 2), dir_size = le(b, eocd + 12, 4), dir_off = le(b, eocd + 16, 4);
  if (dir_off == 0xffffffffu || count == 0xffffu) throw bad("zip64 archives (over 4 GiB) are not supported");
  if (dir_off + dir_size > eocd) throw bad("central directory runs past its end record");
  std::vector<ZipEntry> out;
  size_t p = dir_off;
  for (uint64_t k = 0; k < count; ++k) {
    if (p + 46 > eocd || le(b, p, 4) != 0x02014b50) throw bad("corrupt central directory");
    const uint64_t method = le(b, p + 10, 2), csize = le(b, p + 20, 4), usize = le(b, p + 24, 4);
    const uint64_t name_len = le(b, p + 28, 2), extra_len = le(b, p + 30, 2), comment_len = le(b, p + 32, 2);
    const uint64_t local = le(b, p + 42, 4);
    if (p + 46 + name_len > eocd) throw bad("corrupt central directory");
    ZipEntry e;
    e.name = b.substr(p + 46, name_len);
    if (method != 0) throw bad(cat("entry '", e.name, "' is compressed (method ", method, "); torch.save stores entries"));
    if (csize != usize) throw bad(cat("entry '", e.name, "' has inconsistent sizes"));
    if (local + 30 > b.size() || le(b, local, 4) != 0x04034b50) throw bad(cat("entry '", e.name, "': bad local header"));
    e.offset = local + 30 + le(b, local + 26, 2) + le(b, local + 28, 2);
    e.size = usize;
    if (e.offset > b.size() || e.size > b.size() - e.offset) throw bad(cat("entry '", e.name, "' runs past the end of the file"));
    out.push_back(e);
    p += 46 + name_len + extra_len + comment_len;
  }
  return out;
}

// ------------------------------------------------------------------------------------------
// The restricted unpickler
// ------------------------------------------------------------------------------------------
struct PyObj;
using PyPtr = std::shared_ptr<PyObj>;
struct StorageRef {
  std::string key;
  DType dtype;
  size_t elem_size;
  int64_t numel;
};
struct TensorRef {
  StorageRef storage;
  int64_t offset;
  Shape shape, stride;
};
struct Global {
  std::string module, name;
};
struct PyObj {
  PyObj() = default;
  PyObj(const PyObj&) = delete;
  PyObj& operator=(const PyObj&) = delete;
  // Iterative: a pickle may nest 90,000 one-item tuples, and destroying them recursively would
  // overflow the stack. Children this object is the last owner of give up their own children
  // first, so no destructor recurses.
  ~PyObj() {
    std::vector<PyPtr> work;
    auto take = [&](PyObj& o) {
      for (PyPtr& c : o.items) work.push_back(std::move(c));
      for (auto& [k, v] : o.dict) work.push_back(std::move(k)), work.push_back(std::move(v));
      o.items.clear();
      o.dict.clear();
    };
    take(*this);
    while (!work.empty()) {
      PyPtr p = std::move(work.back());
      work.pop_back();
      if (p && p.use_count() == 1) take(*p);
    }
  }
  enum Kind { None, Bool, Int, Float, Str, Tuple, List, Dict, GlobalK, Storage, TensorK, Mark } kind = None;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::vector<PyPtr> items;                    // Tuple, List
  std::vector<std::pair<PyPtr, PyPtr>> dict;  // Dict, in insertion order
  Global global;
  StorageRef storage;
  TensorRef tensor;
};

class Unpickler {
 public:
  Unpickler(const std::string& data, const std::string& path) : d_(data), path_(path) {}
  Unpickler(const Unpickler&) = delete;
  Unpickler& operator=(const Unpickler&) = delete;
  // A list appended to itself (through the memo) is a cycle of shared pointers: empty every
  // container this pickle made, so none outlives the read. Keep the Unpickler alive while the
  // result of load() is in use.
  ~Unpickler() {
    for (const std::weak_ptr<PyObj>& w : containers_)
      if (PyPtr o = w.lock()) {
        o->items.clear();
        o->dict.clear();
      }
  }

  PyPtr load() {
    while (true) {
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;  // PROTO
        case 0x95: bytes(8); break;  // FRAME (protocol 4): only a hint
        case '.': {                   // STOP
          PyPtr r = pop();
          return r;
        }
        case '(': push(make(PyObj::Mark)); break;
        case 'N': push(make(PyObj::None)); break;
        case 0x88: case 0x89: {
          PyPtr o = make(PyObj::Bool);
          o->i = op == 0x88;
          push(o);
          break;
        }
        case 'K': push_int(byte()); break;
        case 'M': push_int(static_cast<int64_t>(le(bytes(2), 0, 2))); break;
        case 'J': push_int(static_cast<int32_t>(le(bytes(4), 0, 4))); break;
        case 0x8a: {  // LONG1: little-endian two's complement of n bytes
          const uint8_t n = byte();
          if (n > 8) fail("integer too large");
          const std::string v = bytes(n);
          int64_t x = n ? static_cast<int64_t>(le(v, 0, n)) : 0;
          if (n && n < 8 && (static_cast<uint8_t>(v[n - 1]) & 0x80)) x -= int64_t(1) << (8 * n);
          push_int(x);
          break;
        }
        case 'G': {  // BINFLOAT: big-endian double
          const std::string v = bytes(8);
          uint64_t bits = 0;
          for (int k = 0; k < 8; ++k) bits = bits << 8 | static_cast<uint8_t>(v[k]);
          PyPtr o = make(PyObj::Float);
          std::memcpy(&o->f, &bits, 8);
          push(o);
          break;
        }
        case 'X': push_str(bytes(static_cast<size_t>(le(bytes(4), 0, 4)))); break;
        case 0x8c: push_str(bytes(byte())); break;                                    // SHORT_BINUNICODE
        case 0x8d: push_str(bytes(checked_len(le(bytes(8), 0, 8)))); break;           // BINUNICODE8
        case 'c': {  // GLOBAL "module\nname\n"
          PyPtr g = make(PyObj::GlobalK);
          g->global.module = line();
          g->global.name = line();
          push(checked_global(g));
          break;
        }
        case 0x93: {  // STACK_GLOBAL
          PyPtr name = pop(), mod = pop();
          if (mod->kind != PyObj::Str || name->kind != PyObj::Str) fail("STACK_GLOBAL needs two strings");
          PyPtr g = make(PyObj::GlobalK);
          g->global = {mod->s, name->s};
          push(checked_global(g));
          break;
        }
        case 'q': memo(byte()); break;
        case 'r': memo(le(bytes(4), 0, 4)); break;
        case 0x94: memo(memo_.size()); break;  // MEMOIZE
        case 'h': push(get(byte())); break;
        case 'j': push(get(le(bytes(4), 0, 4))); break;
        case ')': push(make(PyObj::Tuple)); break;
        case ']': push(make(PyObj::List)); break;
        case '}': push(make(PyObj::Dict)); break;
        case 0x85: case 0x86: case 0x87: {  // TUPLE1..3
          PyPtr t = make(PyObj::Tuple);
          t->items.resize(op - 0x84);
          for (size_t k = t->items.size(); k-- > 0;) t->items[k] = pop();
          push(t);
          break;
        }
        case 't': {
          PyPtr t = make(PyObj::Tuple);
          t->items = pop_to_mark();
          push(t);
          break;
        }
        case 'l': {
          PyPtr t = make(PyObj::List);
          t->items = pop_to_mark();
          push(t);
          break;
        }
        case 'a': {
          PyPtr v = pop();
          expect(top(), PyObj::List, "APPEND")->items.push_back(v);
          break;
        }
        case 'e': {
          std::vector<PyPtr> vs = pop_to_mark();
          PyPtr l = expect(top(), PyObj::List, "APPENDS");
          l->items.insert(l->items.end(), vs.begin(), vs.end());
          break;
        }
        case 's': {
          PyPtr v = pop(), k = pop();
          expect(top(), PyObj::Dict, "SETITEM")->dict.emplace_back(k, v);
          break;
        }
        case 'u': {
          std::vector<PyPtr> kv = pop_to_mark();
          if (kv.size() % 2) fail("SETITEMS with an odd number of items");
          PyPtr dct = expect(top(), PyObj::Dict, "SETITEMS");
          for (size_t k = 0; k < kv.size(); k += 2) dct->dict.emplace_back(kv[k], kv[k + 1]);
          break;
        }
        case 'Q': push(persistent(pop())); break;  // BINPERSID
        case 'R': {                                 // REDUCE
          PyPtr args = pop(), fn = pop();
          push(reduce(fn, args));
          break;
        }
        case 'b': {  // BUILD: only a state dict's `_metadata` attribute, which is ignored
          PyPtr state = pop();
          expect(top(), PyObj::Dict, "BUILD");
          if (state->kind != PyObj::Dict && state->kind != PyObj::None) fail("BUILD with an unexpected state");
          break;
        }
        default:
          fail(cat("opcode 0x", "0123456789abcdef"[op >> 4], "0123456789abcdef"[op & 15],
                   " is not part of a torch.save state dict"));
      }
    }
  }

 private:
  [[noreturn]] void fail(const std::string& why) const {
    throw UserError(cat(path_, ": refused: ", why, " (at byte ", pos_, " of the pickle)"));
  }
  uint8_t byte() {
    if (pos_ >= d_.size()) fail("the pickle ends early");
    return static_cast<uint8_t>(d_[pos_++]);
  }
  std::string bytes(size_t n) {
    if (n > d_.size() - pos_) fail("the pickle ends early");
    std::string s = d_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  size_t checked_len(uint64_t n) const {
    if (n > d_.size()) fail("a length runs past the end");
    return static_cast<size_t>(n);
  }
  std::string line() {
    const size_t end = d_.find('\n', pos_);
    if (end == std::string::npos || end - pos_ > 256) fail("malformed GLOBAL");
    std::string s = d_.substr(pos_, end - pos_);
    pos_ = end + 1;
    return s;
  }
  PyPtr make(PyObj::Kind k) const {
    auto o = std::make_shared<PyObj>();
    o->kind = k;
    if (k == PyObj::Tuple || k == PyObj::List || k == PyObj::Dict) containers_.push_back(o);
    return o;
  }
  void push(PyPtr o) {
    if (stack_.size() > 1000000) fail("stack too deep");
    stack_.push_back(std::move(o));
  }
  void push_int(int64_t v) {
    PyPtr o = make(PyObj::Int);
    o->i = v;
    push(o);
  }
  void push_str(std::string s) {
    PyPtr o = make(PyObj::Str);
    o->s = std::move(s);
    push(o);
  }
  PyPtr pop() {
    if (stack_.empty() || stack_.back()->kind == PyObj::Mark) fail("stack underflow");
    PyPtr o = stack_.back();
    stack_.pop_back();
    return o;
  }
  PyPtr top() {
    if (stack_.empty()) fail("stack underflow");
    return stack_.back();
  }
  std::vector<PyPtr> pop_to_mark() {
    std::vector<PyPtr> out;
    while (!stack_.empty() && stack_.back()->kind != PyObj::Mark) {
      out.push_back(stack_.back());
      stack_.pop_back();
    }
    if (stack_.empty()) fail("no MARK on the stack");
    stack_.pop_back();
    std::reverse(out.begin(), out.end());
    return out;
  }
  PyPtr expect(PyPtr o, PyObj::Kind k, const char* op) const {
    if (o->kind != k) fail(cat(op, " applied to the wrong kind of object"));
    return o;
  }
  void memo(uint64_t idx) {
    if (idx > 10000000) fail("memo index too large");
    if (memo_.size() <= idx) memo_.resize(idx + 1);
    memo_[idx] = top();
  }
  PyPtr get(uint64_t idx) const {
    if (idx >= memo_.size() || !memo_[idx]) fail(cat("memo ", idx, " was never set"));
    return memo_[idx];
  }
  PyPtr checked_global(PyPtr g) const {
    static const std::vector<std::pair<std::string, std::string>> allowed = {
        {"collections", "OrderedDict"},  {"torch._utils", "_rebuild_tensor_v2"},
        {"torch._utils", "_rebuild_parameter"}, {"torch", "FloatStorage"},
        {"torch", "LongStorage"},        {"torch", "DoubleStorage"},
        {"torch", "IntStorage"}};
    for (const auto& [m, n] : allowed)
      if (g->global.module == m && g->global.name == n) return g;
    fail(cat("global '", g->global.module, ".", g->global.name, "' is not allowed in a state dict"));
  }
  PyPtr persistent(PyPtr pid) const {
    // ('storage', torch.<Type>Storage, key, location, numel)
    if (pid->kind != PyObj::Tuple || pid->items.size() != 5 || pid->items[0]->s != "storage" ||
        pid->items[1]->kind != PyObj::GlobalK || pid->items[2]->kind != PyObj::Str || pid->items[4]->kind != PyObj::Int)
      fail("unexpected persistent id");
    PyPtr o = make(PyObj::Storage);
    const std::string& type = pid->items[1]->global.name;
    o->storage.key = pid->items[2]->s;
    o->storage.numel = pid->items[4]->i;
    if (type == "FloatStorage") o->storage = {o->storage.key, DType::F32, 4, o->storage.numel};
    else if (type == "DoubleStorage") o->storage = {o->storage.key, DType::F32, 8, o->storage.numel};
    else if (type == "LongStorage") o->storage = {o->storage.key, DType::I64, 8, o->storage.numel};
    else if (type == "IntStorage") o->storage = {o->storage.key, DType::I64, 4, o->storage.numel};
    else fail(cat("storage type ", type, " is not supported"));
    if (o->storage.numel < 0) fail("negative storage size");
    return o;
  }
  Shape int_tuple(const PyPtr& t, const char* what) const {
    if (t->kind != PyObj::Tuple) fail(cat(what, " is not a tuple"));
    Shape s;
    for (const PyPtr& x : t->items) {
      if (x->kind != PyObj::Int || x->i < 0) fail(cat(what, " holds a non-integer or negative entry"));
      s.push_back(x->i);
    }
    if (s.size() > static_cast<size_t>(kMaxDims)) fail(cat(what, " has more than ", kMaxDims, " dims"));
    return s;
  }
  PyPtr reduce(const PyPtr& fn, const PyPtr& args) const {
    if (fn->kind != PyObj::GlobalK || args->kind != PyObj::Tuple) fail("REDUCE of something that is not a global");
    const Global& g = fn->global;
    if (g.name == "OrderedDict") {
      if (!args->items.empty()) fail("OrderedDict with arguments");
      return make(PyObj::Dict);
    }
    if (g.name == "_rebuild_parameter") {
      if (args->items.size() < 1 || args->items[0]->kind != PyObj::TensorK) fail("_rebuild_parameter without a tensor");
      return args->items[0];
    }
    if (g.name == "_rebuild_tensor_v2") {
      if (args->items.size() < 4 || args->items[0]->kind != PyObj::Storage || args->items[1]->kind != PyObj::Int)
        fail("malformed _rebuild_tensor_v2 arguments");
      PyPtr t = make(PyObj::TensorK);
      t->tensor.storage = args->items[0]->storage;
      t->tensor.offset = args->items[1]->i;
      t->tensor.shape = int_tuple(args->items[2], "tensor size");
      t->tensor.stride = int_tuple(args->items[3], "tensor stride");
      if (t->tensor.shape.size() != t->tensor.stride.size()) fail("size and stride of different lengths");
      return t;
    }
    fail(cat("cannot call ", g.module, ".", g.name));
  }

  const std::string& d_;
  const std::string& path_;
  size_t pos_ = 0;
  std::vector<PyPtr> stack_;
  std::vector<PyPtr> memo_;
  mutable std::vector<std::weak_ptr<PyObj>> containers_;  // every Tuple, List and Dict made
};

// Materialise a (possibly strided) tensor from its storage bytes.
Tensor materialize(const TensorRef& t, std::string_view storage_bytes, const std::string& path,
                   const std::string& name) {
  const StorageRef& s = t.storage;
  // Sizes from the file are checked by division and with overflow-checked arithmetic: a numel
  // of 2^62 + 3 must not wrap to a 12-byte storage, nor a stride of 2^40 to a small extent.
  if (s.numel < 0 || storage_bytes.size() % s.elem_size != 0 ||
      static_cast<uint64_t>(s.numel) != storage_bytes.size() / s.elem_size)
    throw UserError(cat(path, ": storage '", s.key, "' of tensor '", name, "' has ", storage_bytes.size(),
                        " bytes, its header says ", s.numel, " elements"));
  HG_REQUIRE(t.stride.size() == t.shape.size(), path, ": tensor '", name, "' has ", t.shape.size(),
             " dimensions but ", t.stride.size(), " strides");
  int64_t extent = 0, n = 1;
  bool overflow = false;
  for (size_t d = 0; d < t.shape.size(); ++d) {
    HG_REQUIRE(t.shape[d] >= 0 && t.stride[d] >= 0, path, ": tensor '", name, "' has a negative size or stride");
    int64_t span = 0;
    overflow |= __builtin_mul_overflow(t.shape[d], n, &n);
    if (t.shape[d] > 0) {
      overflow |= __builtin_mul_overflow(t.shape[d] - 1, t.stride[d], &span);
      overflow |= __builtin_add_overflow(extent, span, &extent);
    }
  }
  int64_t last = 0;
  overflow |= __builtin_add_overflow(t.offset, extent, &last);
  if (overflow || (n > 0 && (t.offset < 0 || last >= s.numel)))
    throw UserError(cat(path, ": tensor '", name, "' reaches past the end of its storage"));
  Tensor out = Tensor::empty(t.shape, Device::CPU, s.dtype);
  const Shape st = contiguous_strides(t.shape);
  for (int64_t i = 0; i < n; ++i) {
    int64_t src = t.offset, rem = i;
    for (size_t d = 0; d < t.shape.size(); ++d) {
      src += (rem / st[d]) * t.stride[d];
      rem %= st[d];
    }
    const char* p = storage_bytes.data() + src * s.elem_size;
    if (s.dtype == DType::F32) {
      float v;
      if (s.elem_size == 4) std::memcpy(&v, p, 4);
      else { double dv; std::memcpy(&dv, p, 8); v = static_cast<float>(dv); }
      out.data<float>()[i] = v;
    } else {
      int64_t v;
      if (s.elem_size == 8) std::memcpy(&v, p, 8);
      else { int32_t iv; std::memcpy(&iv, p, 4); v = iv; }
      out.data<int64_t>()[i] = v;
    }
  }
  return out;
}

}  // namespace

StateDict read_pth(const std::string& path) {
  const std::string b = read_all(path);
  const std::vector<ZipEntry> entries = read_zip_directory(b, path);
  // The archive's folder is whatever prefix its data.pkl has ("archive/", "resnet18-f37072fd/").
  std::string prefix;
  const ZipEntry* pkl = nullptr;
  for (const ZipEntry& e : entries) {
    const size_t slash = e.name.find('/');
    if (slash != std::string::npos && e.name.substr(slash + 1) == "data.pkl") {
      prefix = e.name.substr(0, slash + 1);
      pkl = &e;
    }
  }
  if (!pkl) throw UserError(cat(path, ": no <folder>/data.pkl in the archive: not a torch.save file"));
  for (const ZipEntry& e : entries)
    if (e.name == prefix + "byteorder" && b.substr(e.offset, e.size) != "little")
      throw UserError(cat(path, ": big-endian tensors are not supported"));
  // Storages by name: a lookup per tensor (a scan per tensor made 60,000 tensors take minutes).
  std::unordered_map<std::string, const ZipEntry*> by_name;
  for (const ZipEntry& e : entries) by_name[e.name] = &e;  // the last of a repeated name, as before
  const std::string pickle = b.substr(pkl->offset, pkl->size);
  Unpickler unpickler(pickle, path);  // outlives root: its destructor breaks any cycle
  PyPtr root = unpickler.load();
  if (root->kind != PyObj::Dict) throw UserError(cat(path, ": the pickle is not a state dict"));
  StateDict sd;
  for (const auto& [k, v] : root->dict) {
    if (k->kind != PyObj::Str || v->kind != PyObj::TensorK)
      throw UserError(cat(path, ": state dict entries must map names to tensors"));
    const auto found = by_name.find(prefix + "data/" + v->tensor.storage.key);
    const ZipEntry* data = found == by_name.end() ? nullptr : found->second;
    if (!data) throw UserError(cat(path, ": storage '", v->tensor.storage.key, "' of '", k->s, "' is missing"));
    // A view, not a copy: many tensors may share one large storage.
    sd.add(k->s, materialize(v->tensor, std::string_view(b).substr(data->offset, data->size), path, k->s));
  }
  return sd;
}

StateDict read_safetensors(const std::string& path) {
  const std::string b = read_all(path);
  auto bad = [&](const std::string& why) { return UserError(cat(path, ": not a valid safetensors file: ", why)); };
  if (b.size() < 8) throw bad("too short");
  const uint64_t n = le(b, 0, 8);
  if (n > b.size() - 8 || n > (uint64_t(100) << 20)) throw bad(cat("header length ", n, " runs past the end"));
  // A safetensors header is an object of objects: nesting past a few levels is an attack on
  // the parser (10 million '[' took 10 s), refused before parsing.
  {
    constexpr int kMaxNesting = 16;
    int depth = 0;
    bool in_string = false;
    for (size_t k = 8; k < 8 + n; ++k) {
      const char c = b[k];
      if (in_string) {
        if (c == '\\') ++k;
        else if (c == '"') in_string = false;
      } else if (c == '"') {
        in_string = true;
      } else if (c == '[' || c == '{') {
        if (++depth > kMaxNesting) throw bad(cat("header nested more than ", kMaxNesting, " deep"));
      } else if (c == ']' || c == '}') {
        --depth;
      }
    }
  }
  nlohmann::json h;
  std::unordered_map<std::string, size_t> header_position;  // the order of the header's keys
  try {
    h = nlohmann::json::parse(b.substr(8, n), [&](int depth, nlohmann::json::parse_event_t event, nlohmann::json& parsed) {
      if (depth == 1 && event == nlohmann::json::parse_event_t::key)
        header_position.emplace(parsed.get<std::string>(), header_position.size());
      return true;
    });
  } catch (const std::exception& e) {
    throw bad(cat("header is not JSON (", e.what(), ")"));
  }
  if (!h.is_object()) throw bad("header is not a JSON object");
  const size_t data0 = 8 + n, data_len = b.size() - data0;
  // Keep the file's order of data (the header is a JSON object, whose order is not kept).
  std::vector<std::tuple<uint64_t, size_t, std::string, nlohmann::json>> items;
  for (auto it = h.begin(); it != h.end(); ++it) {
    if (it.key() == "__metadata__") continue;
    const nlohmann::json& e = it.value();
    if (!e.is_object() || !e.contains("dtype") || !e.contains("shape") || !e.contains("data_offsets") ||
        !e["data_offsets"].is_array() || e["data_offsets"].size() != 2 || !e["shape"].is_array())
      throw bad(cat("entry '", it.key(), "' lacks dtype, shape or data_offsets"));
    items.emplace_back(e["data_offsets"][0].is_number_unsigned() ? e["data_offsets"][0].get<uint64_t>() : 0,
                       header_position[it.key()], it.key(), e);
  }
  // By offset; tensors at the same offset (empty ones) in the header's order.
  std::sort(items.begin(), items.end(), [](const auto& a, const auto& c) {
    return std::tie(std::get<0>(a), std::get<1>(a)) < std::tie(std::get<0>(c), std::get<1>(c));
  });
  StateDict sd;
  for (const auto& [begin_unused, position_unused, name, e] : items) {
    (void)begin_unused, (void)position_unused;
    const std::string dtype = e["dtype"].is_string() ? e["dtype"].get<std::string>() : "";
    size_t item = 0;
    DType dt = DType::F32;
    if (dtype == "F32") item = 4;
    else if (dtype == "F64") item = 8;
    else if (dtype == "I64") { item = 8; dt = DType::I64; }
    else throw bad(cat("entry '", name, "' has dtype '", dtype, "' (need F32, F64 or I64)"));
    Shape shape;
    for (const auto& d : e["shape"]) {
      if (!d.is_number_unsigned()) throw bad(cat("entry '", name, "' has a bad shape"));
      shape.push_back(d.get<int64_t>());
    }
    if (!e["data_offsets"][0].is_number_unsigned() || !e["data_offsets"][1].is_number_unsigned())
      throw bad(cat("entry '", name, "' has bad data_offsets"));
    const uint64_t lo = e["data_offsets"][0], hi = e["data_offsets"][1];
    const int64_t numel = shape_numel(shape);
    if (lo > hi || hi > data_len || hi - lo != static_cast<uint64_t>(numel) * item)
      throw bad(cat("entry '", name, "': data_offsets [", lo, ", ", hi, ") do not fit its shape ",
                    shape_str(shape), " and the ", data_len, " data bytes"));
    Tensor t = Tensor::empty(shape, Device::CPU, dt);
    const char* src = b.data() + data0 + lo;
    if (item == 8 && dt == DType::F32) {
      for (int64_t i = 0; i < numel; ++i) {
        double v;
        std::memcpy(&v, src + 8 * i, 8);
        t.data<float>()[i] = static_cast<float>(v);
      }
    } else if (numel > 0) {
      std::memcpy(t.raw(), src, t.nbytes());
    }
    sd.add(name, std::move(t));
  }
  return sd;
}

StateDict read_state_dict(const std::string& path) {
  std::error_code ec;
  HG_REQUIRE(!std::filesystem::is_directory(path, ec), path, ": is a folder, not a checkpoint file");
  std::ifstream f(path, std::ios::binary);
  if (!f) throw UserError(cat(path, ": cannot open file"));
  char magic[4] = {0, 0, 0, 0};
  f.read(magic, 4);
  const bool pth_name = path.size() > 4 && (path.substr(path.size() - 4) == ".pth" || path.substr(path.size() - 3) == ".pt");
  if (std::memcmp(magic, "PK\x03\x04", 4) == 0 || pth_name) return read_pth(path);
  return read_safetensors(path);
}

void write_safetensors(const std::string& path, const StateDict& sd) {
  nlohmann::ordered_json h = nlohmann::ordered_json::object();
  uint64_t off = 0;
  for (const auto& [name, t] : sd.entries) {
    h[name] = {{"dtype", t.dtype() == DType::F32 ? "F32" : "I64"}, {"shape", t.shape()},
               {"data_offsets", {off, off + t.nbytes()}}};
    off += t.nbytes();
  }
  h["__metadata__"] = {{"format", "pt"}, {"writer", "handgrad"}};
  std::string header = h.dump();
  header.append((8 - header.size() % 8) % 8, ' ');  // data starts 8-byte aligned
  std::string bytes(8, '\0');
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<char>((header.size() >> (8 * i)) & 0xff);
  bytes += header;
  // Each tensor's bytes go out from the tensor (a host copy only for a GPU one): no joined copy.
  std::vector<Tensor> host_copies;
  host_copies.reserve(sd.entries.size());
  std::vector<std::string_view> pieces = {bytes};
  for (const auto& [name, t] : sd.entries) {
    const Tensor* src = &t;
    if (t.device() != Device::CPU) src = &host_copies.emplace_back(t.to(Device::CPU));
    pieces.emplace_back(static_cast<const char*>(src->raw()), src->nbytes());
  }
  write_file_atomic(path, pieces);
}

}  // namespace handgrad
