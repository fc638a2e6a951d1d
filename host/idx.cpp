#include "host/idx.h"

#include <zlib.h>

#include <cstdlib>
#include <filesystem>
#include <memory>

#include "kernels/error.h"

namespace handgrad {

namespace fs = std::filesystem;

namespace {

// Largest decompressed file accepted: far above FashionMNIST's 47 MB, far below a zip bomb.
constexpr size_t kMaxBytes = size_t(1) << 30;

// The whole (decompressed) file. gzread reads plain files as they are, so both forms work.
std::vector<uint8_t> read_gz(const std::string& path) {
  std::unique_ptr<gzFile_s, int (*)(gzFile)> f(gzopen(path.c_str(), "rb"), gzclose);
  if (!f) throw UserError(cat(path, ": cannot open file"));
  std::vector<uint8_t> out;
  uint8_t buf[1 << 16];
  while (true) {
    const int n = gzread(f.get(), buf, sizeof buf);
    if (n < 0) {
      int code = 0;
      const char* msg = gzerror(f.get(), &code);
      throw UserError(cat(path, ": corrupt gzip data (", msg ? msg : "unknown error", ")"));
    }
    if (n == 0) break;
    out.insert(out.end(), buf, buf + n);
    if (out.size() > kMaxBytes) throw UserError(cat(path, ": larger than 1 GiB decompressed; not an IDX file"));
  }
  // gzread stops quietly at a truncated gzip stream: ask whether the stream ended cleanly.
  int code = 0;
  gzerror(f.get(), &code);
  if (code != Z_OK && code != Z_STREAM_END) throw UserError(cat(path, ": truncated or corrupt gzip file"));
  return out;
}

uint32_t be32(const std::vector<uint8_t>& b, size_t at) {
  return uint32_t(b[at]) << 24 | uint32_t(b[at + 1]) << 16 | uint32_t(b[at + 2]) << 8 | b[at + 3];
}

// Header checks shared by both kinds: returns the dims.
std::vector<uint32_t> idx_header(const std::vector<uint8_t>& b, const std::string& path, uint32_t magic,
                                 int ndims) {
  const size_t header = 4 + 4 * size_t(ndims);
  if (b.size() < header) throw UserError(cat(path, ": too short for an IDX header (", b.size(), " bytes)"));
  const uint32_t got = be32(b, 0);
  if (got != magic)
    throw UserError(cat(path, ": IDX magic number is ", got, ", expected ", magic,
                        magic == 2051 ? " (an images file)" : " (a labels file)"));
  std::vector<uint32_t> dims;
  uint64_t total = 1;
  for (int d = 0; d < ndims; ++d) {
    dims.push_back(be32(b, 4 + 4 * d));
    // Each dimension on its own too: once one is 0 the product stays 0 whatever follows
    // (0 images of 4294967295 x 4294967295 pixels).
    if (dims.back() > kMaxBytes) throw UserError(cat(path, ": IDX dimensions are implausibly large"));
    total *= dims.back();
    if (total > kMaxBytes) throw UserError(cat(path, ": IDX dimensions are implausibly large"));
  }
  if (b.size() != header + total)
    throw UserError(cat(path, ": the header promises ", total, " data bytes, the file has ",
                        b.size() - header));
  return dims;
}

}  // namespace

IdxImages read_idx_images(const std::string& path) {
  std::vector<uint8_t> b = read_gz(path);
  const std::vector<uint32_t> dims = idx_header(b, path, 2051, 3);
  IdxImages im;
  im.count = dims[0];
  im.rows = dims[1];
  im.cols = dims[2];
  constexpr int64_t kMaxSide = 4096;
  HG_REQUIRE(im.rows > 0 && im.cols > 0 && im.rows <= kMaxSide && im.cols <= kMaxSide, path, ": images of size ",
             im.rows, "x", im.cols, " (each side must be 1 to ", kMaxSide, ")");
  im.pixels.assign(b.begin() + 16, b.end());
  return im;
}

std::vector<uint8_t> read_idx_labels(const std::string& path) {
  std::vector<uint8_t> b = read_gz(path);
  idx_header(b, path, 2049, 1);
  return std::vector<uint8_t>(b.begin() + 8, b.end());
}

namespace {

const char* const kFashionMnistStems[4] = {"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                                           "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"};

// The four files of the first folder that holds them all (each .gz or not), in kFashionMnistStems'
// order, and that folder; an empty folder when none does.
struct FashionMnistFiles {
  std::string dir, paths[4];
};

FashionMnistFiles locate_fashion_mnist(const std::string& data_dir) {
  std::vector<std::string> dirs;
  if (!data_dir.empty()) dirs.push_back(data_dir);
  if (const char* env = std::getenv("HANDGRAD_DATA")) dirs.push_back(env);
  dirs.push_back("/usr/share/datasets/fashion-mnist");
  dirs.push_back("data/fashion-mnist");
  auto find = [](const std::string& dir, const std::string& stem) -> std::string {
    for (const char* ext : {".gz", ""}) {
      const fs::path p = fs::path(dir) / (stem + ext);
      std::error_code ec;
      if (fs::is_regular_file(p, ec)) return p.string();
    }
    return "";
  };
  for (size_t i = 0; i < dirs.size(); ++i) {
    FashionMnistFiles f;
    bool all = true;
    for (int k = 0; k < 4; ++k) all = all && !(f.paths[k] = find(dirs[i], kFashionMnistStems[k])).empty();
    if (all) {
      f.dir = dirs[i];
      return f;
    }
    // An explicit --data-dir that lacks the files is an error of its own, not a fallback.
    HG_REQUIRE(!(i == 0 && !data_dir.empty()), "--data-dir ", data_dir,
               " does not hold the four FashionMNIST files (", kFashionMnistStems[0], "[.gz], ...)");
  }
  return {};
}

}  // namespace

std::string find_fashion_mnist(const std::string& data_dir) { return locate_fashion_mnist(data_dir).dir; }

FashionMnist load_fashion_mnist(const std::string& data_dir) {
  const FashionMnistFiles files = locate_fashion_mnist(data_dir);
  if (files.dir.empty())
    throw UserError(
        "FashionMNIST not found (looked in --data-dir, $HANDGRAD_DATA, /usr/share/datasets/fashion-mnist, "
        "./data/fashion-mnist): apt-get install dataset-fashion-mnist, or put the four "
        "*-ubyte.gz files in one of those folders");
  FashionMnist d;
  d.dir = files.dir;
  d.train_images = read_idx_images(files.paths[0]);
  d.train_labels = read_idx_labels(files.paths[1]);
  d.test_images = read_idx_images(files.paths[2]);
  d.test_labels = read_idx_labels(files.paths[3]);
  for (auto [im, lb, name] : {std::tuple{&d.train_images, &d.train_labels, "train"},
                              {&d.test_images, &d.test_labels, "test"}}) {
    HG_REQUIRE(im->count == static_cast<int64_t>(lb->size()), d.dir, ": ", name, " set has ", im->count,
               " images but ", lb->size(), " labels");
    HG_REQUIRE(im->count > 0, d.dir, ": the ", name, " set is empty");
    for (uint8_t l : *lb) HG_REQUIRE(l < 10, d.dir, ": ", name, " label ", int(l), " is not a class in [0, 10)");
  }
  HG_REQUIRE(d.train_images.rows == d.test_images.rows && d.train_images.cols == d.test_images.cols,
             d.dir, ": train and test images differ in size");
  return d;
}

}  // namespace handgrad
