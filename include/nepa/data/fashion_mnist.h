// Fashion-MNIST from the IDX files (gzipped or not) that Debian's dataset-fashion-mnist installs.
#pragma once

#include <torch/types.h>

#include <string>

namespace nepa {

// Where Debian's package puts the files.
inline constexpr const char* kDefaultFashionMnistRoot = "/usr/share/datasets/fashion-mnist";

struct LabelledImages {
  torch::Tensor images;  // uint8 [N, H, W]
  torch::Tensor labels;  // int64 [N]
};

// Reads one IDX file: magic 0x0000 08 <ndim>, big-endian dims, uint8 data. Accepts .gz.
torch::Tensor read_idx(const std::string& path);

// split = "train" or "test" ("t10k" prefix); root empty = the Debian location.
LabelledImages load_fashion_mnist(const std::string& root, const std::string& split);

}  // namespace nepa
