// IDX files (the MNIST family's format), gzip-compressed or not, read strictly: the magic
// number, the counts and the sizes must agree with the bytes actually there. A truncated,
// oversized or lying file is a UserError naming the file, never a crash.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace handgrad {

struct IdxImages {
  int64_t count = 0, rows = 0, cols = 0;
  std::vector<uint8_t> pixels;  // count * rows * cols, row-major
};

// Magic 2051: unsigned bytes, 3 dims (count, rows, cols).
IdxImages read_idx_images(const std::string& path);
// Magic 2049: unsigned bytes, 1 dim (count).
std::vector<uint8_t> read_idx_labels(const std::string& path);

struct FashionMnist {
  std::string dir;
  IdxImages train_images, test_images;
  std::vector<uint8_t> train_labels, test_labels;
};

// Looks in `data_dir` (when not empty), then $HANDGRAD_DATA, /usr/share/datasets/fashion-mnist
// (Debian's dataset-fashion-mnist), ./data/fashion-mnist, for the four files
// {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]. Checks images and labels pair up and
// labels are in [0, 10). Missing data: one UserError saying how to get it.
FashionMnist load_fashion_mnist(const std::string& data_dir);

// The folder load_fashion_mnist(data_dir) would read, or "" where none holds the four files (an
// explicit data_dir that lacks them: UserError, as there).
std::string find_fashion_mnist(const std::string& data_dir);

}  // namespace handgrad
