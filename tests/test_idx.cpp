#include <gtest/gtest.h>
#include <unistd.h>
#include <zlib.h>

#include <filesystem>
#include <fstream>

#include "kernels/error.h"
#include "host/idx.h"

using namespace handgrad;
namespace fs = std::filesystem;

class IdxTest : public ::testing::Test {
 protected:
  fs::path dir = fs::temp_directory_path() / ("hg_idx_" + std::to_string(::getpid()));
  void SetUp() override { fs::create_directories(dir); }
  void TearDown() override { fs::remove_all(dir); }

  static std::string be32(uint32_t v) {
    return std::string{char(v >> 24), char(v >> 16), char(v >> 8), char(v)};
  }
  static std::string images(uint32_t n, uint32_t r, uint32_t c, size_t payload) {
    return be32(2051) + be32(n) + be32(r) + be32(c) + std::string(payload, '\x07');
  }
  static std::string labels(uint32_t n, size_t payload, char value = 3) {
    return be32(2049) + be32(n) + std::string(payload, value);
  }
  std::string write(const std::string& name, const std::string& bytes, bool gz) {
    const std::string p = (dir / name).string();
    if (gz) {
      gzFile f = gzopen(p.c_str(), "wb");
      gzwrite(f, bytes.data(), static_cast<unsigned>(bytes.size()));
      gzclose(f);
    } else {
      std::ofstream(p, std::ios::binary) << bytes;
    }
    return p;
  }
};

TEST_F(IdxTest, ReadsPlainAndGzip) {
  for (bool gz : {false, true}) {
    IdxImages im = read_idx_images(write("i", images(3, 2, 5, 30), gz));
    EXPECT_EQ(im.count, 3);
    EXPECT_EQ(im.rows, 2);
    EXPECT_EQ(im.cols, 5);
    EXPECT_EQ(im.pixels.size(), 30u);
    EXPECT_EQ(read_idx_labels(write("l", labels(4, 4), gz)).size(), 4u);
  }
}

TEST_F(IdxTest, RejectsBadFiles) {
  const std::string good = images(3, 2, 5, 30);
  struct Case {
    const char* name;
    std::string bytes;
    bool gz;
  } cases[] = {
      {"empty", "", false},
      {"short_header", be32(2051) + be32(1), false},
      {"labels_as_images", labels(3, 3), false},
      {"truncated", good.substr(0, good.size() - 1), true},
      {"trailing", good + "x", false},
      {"lying_count", images(1000000, 28, 28, 10), false},
      {"huge_dims", images(0xffffffff, 0xffffffff, 0xffffffff, 0), false},
      {"zero_rows", images(3, 0, 5, 0), false},
  };
  for (const Case& c : cases) EXPECT_THROW(read_idx_images(write(c.name, c.bytes, c.gz)), UserError) << c.name;
  // A gzip stream cut in the middle.
  const std::string whole = write("whole.gz", images(100, 28, 28, 78400), true);
  std::string bytes;
  {
    std::ifstream f(whole, std::ios::binary);
    bytes.assign(std::istreambuf_iterator<char>(f), {});
  }
  EXPECT_THROW(read_idx_images(write("cut.gz", bytes.substr(0, bytes.size() / 2), false)), UserError);
  EXPECT_THROW(read_idx_images((dir / "missing").string()), UserError);
  EXPECT_THROW(read_idx_labels(write("imgs_as_labels", good, false)), UserError);
}

TEST_F(IdxTest, DatasetChecksPairsAndClasses) {
  const fs::path d = dir / "fm";
  fs::create_directories(d);
  auto put = [&](const char* stem, const std::string& bytes) { write(std::string("fm/") + stem + ".gz", bytes, true); };
  put("train-images-idx3-ubyte", images(4, 2, 2, 16));
  put("train-labels-idx1-ubyte", labels(4, 4));
  put("t10k-images-idx3-ubyte", images(2, 2, 2, 8));
  put("t10k-labels-idx1-ubyte", labels(2, 2));
  EXPECT_EQ(load_fashion_mnist(d.string()).train_images.count, 4);
  put("t10k-labels-idx1-ubyte", labels(3, 3));  // 2 images, 3 labels
  EXPECT_THROW(load_fashion_mnist(d.string()), UserError);
  put("t10k-labels-idx1-ubyte", labels(2, 2, 11));  // class 11
  EXPECT_THROW(load_fashion_mnist(d.string()), UserError);
  EXPECT_THROW(load_fashion_mnist((dir / "nothing_here").string()), UserError);
}

TEST(FashionMnist, TheRealDatasetWhenInstalled) {
  if (!fs::exists("/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz"))
    GTEST_SKIP() << "dataset-fashion-mnist is not installed";
  const FashionMnist d = load_fashion_mnist("/usr/share/datasets/fashion-mnist");
  EXPECT_EQ(d.train_images.count, 60000);
  EXPECT_EQ(d.test_images.count, 10000);
  EXPECT_EQ(d.train_images.rows, 28);
  EXPECT_EQ(d.train_images.cols, 28);
  std::vector<int> hist(10, 0);
  for (uint8_t l : d.test_labels) ++hist[l];
  for (int h : hist) EXPECT_EQ(h, 1000);  // FashionMNIST's test set is balanced
}
