#include <gtest/gtest.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <type_traits>

#include "host/npy.h"
#include "test_util.h"

using namespace handgrad;
namespace fs = std::filesystem;

static_assert(!std::is_copy_constructible_v<Tensor>, "tensors must not copy by accident");
static_assert(!std::is_copy_constructible_v<Buffer>, "buffers must not copy by accident");
static_assert(std::is_nothrow_move_constructible_v<Tensor>);

TEST(Tensor, ShapesAndMoves) {
  Tensor t = Tensor::zeros({2, 3, 4});
  EXPECT_EQ(t.numel(), 24);
  EXPECT_EQ(t.ndim(), 3);
  EXPECT_EQ(t.size(-1), 4);
  const float* p = t.data<float>();
  Tensor u = std::move(t);
  EXPECT_EQ(u.data<float>(), p);
  EXPECT_EQ(contiguous_strides({2, 3, 4}), (Shape{12, 4, 1}));
  Tensor s = Tensor::zeros({});  // a scalar
  EXPECT_EQ(s.numel(), 1);
  Tensor e = Tensor::zeros({3, 0});
  EXPECT_EQ(e.numel(), 0);
}

TEST(Tensor, RejectsBadShapes) {
  EXPECT_NO_THROW(Tensor::empty(Shape(kMaxDims, 1)));
  EXPECT_THROW(Tensor::empty(Shape(kMaxDims + 1, 1)), UserError);
  EXPECT_THROW(Tensor::empty({-1}), UserError);
  EXPECT_THROW(Tensor::empty({int64_t(1) << 40, int64_t(1) << 40}), UserError);
  Tensor t = Tensor::zeros({2, 3});
  EXPECT_THROW(t.reshape_({4, 2}), UserError);
  EXPECT_THROW(t.data<int64_t>(), InternalError);
}

class NpyTest : public ::testing::Test {
 protected:
  fs::path dir = fs::temp_directory_path() / ("hg_npy_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir); }
  void TearDown() override { fs::remove_all(dir); }
  std::string write_raw(const std::string& name, const std::string& bytes) {
    const std::string p = (dir / name).string();
    std::ofstream(p, std::ios::binary) << bytes;
    return p;
  }
  // "1,1,...,1" (n ones): a shape with n dims.
  static std::string ones(int n) {
    std::string s;
    for (int i = 0; i < n; ++i) s += i ? ",1" : "1";
    return s;
  }
  // A .npy file with the given header dict (padded like numpy) and payload.
  std::string npy_bytes(const std::string& dict, const std::string& payload, int version = 1) {
    std::string h = dict;
    const size_t pre = version == 1 ? 10 : 12;
    h.append((64 - (pre + h.size() + 1) % 64) % 64, ' ');
    h += '\n';
    std::string b = "\x93NUMPY";
    b += char(version);
    b += '\0';
    b += char(h.size() & 0xff);
    b += char((h.size() >> 8) & 0xff);
    if (version != 1) b += std::string(2, '\0');
    return b + h + payload;
  }
};

TEST_F(NpyTest, RoundTripFloatAndInt) {
  for (const Shape& shape : {Shape{}, Shape{5}, Shape{2, 3}, Shape{2, 0, 3}, Shape{1, 2, 3, 4}}) {
    Tensor t = test::random_tensor(shape, 3);
    const std::string p = (dir / "a.npy").string();
    write_npy(p, t);
    Tensor r = read_npy_f32(p);
    EXPECT_EQ(r.shape(), shape);
    EXPECT_EQ(r.to_vector(), t.to_vector());
  }
  Tensor i = Tensor::empty({4}, Device::CPU, DType::I64);
  for (int k = 0; k < 4; ++k) i.data<int64_t>()[k] = k * 1000000007LL;
  write_npy((dir / "i.npy").string(), i);
  Tensor ri = read_npy_i64((dir / "i.npy").string());
  for (int k = 0; k < 4; ++k) EXPECT_EQ(ri.data<int64_t>()[k], k * 1000000007LL);
}

TEST_F(NpyTest, ReadsFloat64Int32AndVersion2) {
  double d[3] = {1.5, -2.25, 1e300};
  std::string payload(reinterpret_cast<char*>(d), sizeof d);
  auto p = write_raw("f8.npy", npy_bytes("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", payload, 2));
  Tensor t = read_npy_f32(p);
  EXPECT_EQ(t.to_vector()[0], 1.5f);
  EXPECT_EQ(t.to_vector()[1], -2.25f);
  int32_t iv[2] = {-7, 9};
  auto q = write_raw("i4.npy", npy_bytes("{'descr': '<i4', 'fortran_order': False, 'shape': (2,), }",
                                         std::string(reinterpret_cast<char*>(iv), sizeof iv)));
  Tensor ti = read_npy_i64(q);
  EXPECT_EQ(ti.data<int64_t>()[0], -7);
  EXPECT_EQ(ti.data<int64_t>()[1], 9);
  EXPECT_THROW(read_npy_f32(q), UserError);  // integers where floats are expected
}

TEST_F(NpyTest, RejectsMalformedFiles) {
  const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }";
  const std::string payload(16, '\0');
  struct Case {
    const char* name;
    std::string bytes;
  } cases[] = {
      {"empty", ""},
      {"short", "\x93NUM"},
      {"bad_magic", "\x93NUMPX\x01\x00" + std::string(100, ' ')},
      {"bad_version", "\x93NUMPY\x07\x00" + std::string(100, ' ')},
      {"truncated_data", npy_bytes(ok_dict, payload.substr(0, 10))},
      {"extra_data", npy_bytes(ok_dict, payload + "xxxx")},
      {"lying_header_len", std::string("\x93NUMPY\x01\x00\xff\xff", 10) + "{}"},
      {"fortran", npy_bytes("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", payload)},
      {"big_endian", npy_bytes("{'descr': '>f4', 'fortran_order': False, 'shape': (2, 2), }", payload)},
      {"object", npy_bytes("{'descr': '|O', 'fortran_order': False, 'shape': (2, 2), }", payload)},
      {"negative_dim", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (-2, 2), }", payload)},
      {"huge_dims", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999, 99999999999), }", payload)},
      {"overflowing_dim", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (999999999999999999999999,), }", payload)},
      {"too_many_dims", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (" + ones(kMaxDims + 1) + "), }",
                                  std::string(4, '\0'))},
      {"missing_shape", npy_bytes("{'descr': '<f4', 'fortran_order': False, }", payload)},
      {"unknown_key", npy_bytes("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'x': 1}", payload)},
      {"unterminated", npy_bytes("{'descr': '<f4", payload)},
      {"garbage_header", npy_bytes("hello world", payload)},
  };
  for (const Case& c : cases) {
    const std::string p = write_raw(std::string(c.name) + ".npy", c.bytes);
    EXPECT_THROW(read_npy(p), UserError) << c.name;
  }
  EXPECT_THROW(read_npy((dir / "does_not_exist.npy").string()), UserError);
}

TEST_F(NpyTest, WritesAtomically) {
  // Writing into a folder that does not exist fails cleanly and leaves nothing behind.
  Tensor t = Tensor::zeros({2});
  EXPECT_THROW(write_npy((dir / "missing" / "x.npy").string(), t), UserError);
  write_npy((dir / "x.npy").string(), t);
  int files = 0;
  for (auto& e : fs::directory_iterator(dir)) files += e.path().filename() == "x.npy" ? 1 : 100;
  EXPECT_EQ(files, 1);  // no temp file left
}
