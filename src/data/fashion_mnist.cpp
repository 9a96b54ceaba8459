#include "nepa/data/fashion_mnist.h"

#include <torch/torch.h>
#include <zlib.h>

#include <filesystem>
#include <stdexcept>
#include <vector>

namespace nepa {
namespace fs = std::filesystem;

torch::Tensor read_idx(const std::string& path) {
  gzFile f = gzopen(path.c_str(), "rb");  // reads plain files transparently too
  if (!f) throw std::runtime_error("cannot open IDX file " + path);
  auto read = [&](void* dst, unsigned n) { return gzread(f, dst, n) == static_cast<int>(n); };
  unsigned char magic[4];
  if (!read(magic, 4) || magic[0] != 0 || magic[1] != 0 || magic[2] != 0x08 || magic[3] < 1 || magic[3] > 4) {
    gzclose(f);
    throw std::runtime_error(path + ": not a uint8 IDX file (bad magic)");
  }
  std::vector<int64_t> dims;
  int64_t numel = 1;
  for (int i = 0; i < magic[3]; ++i) {
    unsigned char b[4];
    if (!read(b, 4)) {
      gzclose(f);
      throw std::runtime_error(path + ": truncated IDX header");
    }
    int64_t d = (int64_t(b[0]) << 24) | (int64_t(b[1]) << 16) | (int64_t(b[2]) << 8) | int64_t(b[3]);
    dims.push_back(d);
    numel *= d;
  }
  torch::Tensor t = torch::empty(dims, torch::kUInt8);
  bool ok = numel == 0 || read(t.data_ptr(), static_cast<unsigned>(numel));
  gzclose(f);
  if (!ok) throw std::runtime_error(path + ": truncated IDX data (expected " + std::to_string(numel) + " bytes)");
  return t;
}

LabelledImages load_fashion_mnist(const std::string& root_in, const std::string& split) {
  fs::path root = root_in.empty() ? fs::path(kDefaultFashionMnistRoot) : fs::path(root_in);
  std::string prefix;
  if (split == "train") prefix = "train";
  else if (split == "test" || split == "t10k") prefix = "t10k";
  else throw std::runtime_error("fashion_mnist: unknown split '" + split + "' (train, test)");
  auto find = [&](const std::string& stem) {
    for (const char* ext : {".gz", ""}) {
      fs::path p = root / (prefix + stem + ext);
      if (fs::exists(p)) return p.string();
    }
    throw std::runtime_error("fashion_mnist: " + (root / (prefix + stem + "[.gz]")).string() +
                             " not found (install dataset-fashion-mnist or set data.root)");
  };
  LabelledImages out;
  out.images = read_idx(find("-images-idx3-ubyte"));
  out.labels = read_idx(find("-labels-idx1-ubyte")).to(torch::kInt64);
  if (out.images.dim() != 3 || out.labels.dim() != 1 || out.images.size(0) != out.labels.size(0))
    throw std::runtime_error("fashion_mnist: images " + c10::str(out.images.sizes()) + " and labels " +
                             c10::str(out.labels.sizes()) + " do not match");
  return out;
}

}  // namespace nepa
