#include "nepa/data/dataset.h"

#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <set>

#include "nepa/data/fashion_mnist.h"
#include "nepa/data/transforms.h"

namespace nepa {
namespace fs = std::filesystem;

namespace {

bool is_image_file(const fs::path& p) {
  std::string ext = p.extension().string();
  std::transform(ext.begin(), ext.end(), ext.begin(), [](unsigned char ch) { return std::tolower(ch); });
  return ext == ".jpg" || ext == ".jpeg" || ext == ".png" || ext == ".webp" || ext == ".bmp";
}

uint64_t fnv1a(const std::string& s) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : s) h = (h ^ ch) * 0x100000001b3ULL;
  return h;
}

cv::Mat to_channels(cv::Mat img, int channels) {
  if (channels == 3 && img.channels() == 1) cv::cvtColor(img, img, cv::COLOR_GRAY2RGB);
  else if (channels == 1 && img.channels() == 3) cv::cvtColor(img, img, cv::COLOR_RGB2GRAY);
  return img;
}

// libjpeg and libpng decode a cut-off file into a partly grey image with only a warning; the end markers
// tell a complete file from a truncated one before decoding.
const char* truncation_problem(const std::vector<uchar>& b) {
  if (b.size() >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF) {
    size_t end = b.size();
    while (end > 2 && (b[end - 1] == 0 || b[end - 1] == '\n' || b[end - 1] == '\r' || b[end - 1] == ' ')) --end;
    if (end < 2 || b[end - 2] != 0xFF || b[end - 1] != 0xD9) return "truncated JPEG (no end-of-image marker)";
  }
  if (b.size() >= 6 && b[0] == 'B' && b[1] == 'M') {
    uint32_t declared = b[2] | (b[3] << 8) | (b[4] << 16) | (uint32_t(b[5]) << 24);
    if (b.size() < 54 || declared > b.size()) return "truncated or malformed BMP (shorter than its header says)";
  }
  static const uchar png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  if (b.size() >= 8 && std::equal(png_sig, png_sig + 8, b.begin())) {
    static const uchar iend[4] = {'I', 'E', 'N', 'D'};
    if (b.size() < 20 || !std::equal(iend, iend + 4, b.end() - 8)) return "truncated PNG (no IEND chunk)";
  }
  return nullptr;
}

class ImageFolderDataset : public Dataset {
 public:
  ImageFolderDataset(const std::string& root, const std::string& file_list) : root_(root) {
    if (!fs::is_directory(root_)) throw DataError("image_folder: " + root + " is not a directory");
    for (const auto& e : fs::directory_iterator(root_))
      if (e.is_directory()) classes_.push_back(e.path().filename().string());
    std::sort(classes_.begin(), classes_.end());
    if (classes_.empty()) throw DataError("image_folder: " + root + " has no class folders (expected root/<class>/<image>)");
    std::set<std::string> wanted;
    if (!file_list.empty()) {
      std::ifstream in(file_list);
      if (!in) throw DataError("image_folder: cannot read data.file_list " + file_list);
      for (std::string line; std::getline(in, line);) {
        while (!line.empty() && (line.back() == '\r' || line.back() == ' ')) line.pop_back();
        if (!line.empty()) wanted.insert(line);
      }
    }
    for (size_t c = 0; c < classes_.size(); ++c) {
      std::vector<fs::path> files;
      for (const auto& e : fs::recursive_directory_iterator(root_ / classes_[c], fs::directory_options::follow_directory_symlink))
        if (e.is_regular_file() && is_image_file(e.path())) files.push_back(e.path());
      std::sort(files.begin(), files.end());
      for (const auto& f : files) {
        if (!wanted.empty() && !wanted.count(fs::relative(f, root_).generic_string())) continue;
        paths_.push_back(f.string());
        labels_.push_back(static_cast<int64_t>(c));
      }
    }
    if (paths_.empty()) throw DataError("image_folder: no images under " + root + (file_list.empty() ? "" : " in " + file_list));
  }
  int64_t size() const override { return static_cast<int64_t>(paths_.size()); }
  int num_classes() const override { return static_cast<int>(classes_.size()); }
  int64_t label(int64_t i) const override { return labels_.at(i); }
  std::string describe(int64_t i) const override { return paths_.at(i); }
  cv::Mat load(int64_t i, int channels) const override {
    const std::string& path = paths_.at(i);
    std::ifstream in(path, std::ios::binary);
    if (!in) throw DataError(path + ": cannot open");
    std::vector<uchar> bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    if (bytes.empty()) throw DataError(path + ": empty file");
    if (const char* why = truncation_problem(bytes)) throw DataError(path + ": " + why);
    cv::Mat img;
    try {
      img = cv::imdecode(bytes, channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR);
    } catch (const cv::Exception& e) {
      throw DataError(path + ": cannot decode (" + e.what() + ")");
    }
    if (img.empty()) throw DataError(path + ": not a readable image");
    if (channels == 3) cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
    return img;
  }

 private:
  fs::path root_;
  std::vector<std::string> classes_, paths_;
  std::vector<int64_t> labels_;
};

class FashionMnistDataset : public Dataset {
 public:
  FashionMnistDataset(const std::string& root, const std::string& split) : data_(load_fashion_mnist(root, split)) {
    data_.images = data_.images.contiguous();
    data_.labels = data_.labels.contiguous();
  }
  int64_t size() const override { return data_.images.size(0); }
  int num_classes() const override { return 10; }
  int64_t label(int64_t i) const override { return data_.labels.data_ptr<int64_t>()[i]; }
  std::string describe(int64_t i) const override { return "fashion_mnist[" + std::to_string(i) + "]"; }
  cv::Mat load(int64_t i, int channels) const override {
    const int h = static_cast<int>(data_.images.size(1)), w = static_cast<int>(data_.images.size(2));
    const uint8_t* src = data_.images.data_ptr<uint8_t>() + i * h * w;
    cv::Mat img(h, w, CV_8UC1, const_cast<uint8_t*>(src));
    return to_channels(img.clone(), channels);
  }

 private:
  LabelledImages data_;
};

// Stripes whose orientation is the class: enough structure for a loss to fall and a k-NN to beat chance.
class SyntheticDataset : public Dataset {
 public:
  SyntheticDataset(int64_t size, int image_size, const std::string& split)
      : size_(size), image_size_(image_size), salt_(fnv1a(split)) {}
  int64_t size() const override { return size_; }
  int num_classes() const override { return 10; }
  int64_t label(int64_t i) const override { return i % 10; }
  std::string describe(int64_t i) const override { return "synthetic[" + std::to_string(i) + "]"; }
  cv::Mat load(int64_t i, int channels) const override {
    SampleRng rng = SampleRng::for_sample(salt_, 0, i);
    const int s = image_size_;
    const double angle = M_PI * static_cast<double>(i % 10) / 10.0;
    const double freq = 2.0 + rng.uniform(0.0, 2.0), phase = rng.uniform(0.0, 2 * M_PI);
    cv::Mat img(s, s, CV_8UC3);
    for (int y = 0; y < s; ++y)
      for (int x = 0; x < s; ++x) {
        double t = 2 * M_PI * freq * (x * std::cos(angle) + y * std::sin(angle)) / s + phase;
        double v = 127.5 + 90.0 * std::sin(t) + rng.uniform(-20.0, 20.0);
        auto px = cv::saturate_cast<uchar>(v);
        img.at<cv::Vec3b>(y, x) = cv::Vec3b(px, cv::saturate_cast<uchar>(255 - v), px);
      }
    return to_channels(img, channels);
  }

 private:
  int64_t size_;
  int image_size_;
  uint64_t salt_;
};

}  // namespace

bool Dataset::mark_unreadable(int64_t index) const {
  std::lock_guard<std::mutex> lock(bad_mutex_);
  return bad_.insert(index).second;
}

bool Dataset::known_unreadable(int64_t index) const {
  std::lock_guard<std::mutex> lock(bad_mutex_);
  return bad_.count(index) > 0;
}

int64_t Dataset::unreadable_count() const {
  std::lock_guard<std::mutex> lock(bad_mutex_);
  return static_cast<int64_t>(bad_.size());
}

std::shared_ptr<Dataset> make_image_folder(const std::string& root, const std::string& file_list) {
  return std::make_shared<ImageFolderDataset>(root, file_list);
}

std::shared_ptr<Dataset> make_fashion_mnist(const std::string& root, const std::string& split) {
  try {
    return std::make_shared<FashionMnistDataset>(root, split);
  } catch (const DataError&) {
    throw;
  } catch (const std::exception& e) {
    throw DataError(e.what());
  }
}

std::shared_ptr<Dataset> make_synthetic(int64_t size, int image_size, const std::string& split) {
  return std::make_shared<SyntheticDataset>(size, image_size, split);
}

std::shared_ptr<Dataset> make_dataset(const DataConfig& config, const std::string& split) {
  if (config.dataset == "image_folder") return make_image_folder((fs::path(config.root) / split).string(), config.file_list);
  if (config.dataset == "fashion_mnist") return make_fashion_mnist(config.root, split);
  if (config.dataset == "synthetic") return make_synthetic(config.synthetic_size, config.image_size, split);
  throw DataError("unknown dataset '" + config.dataset + "'");
}

}  // namespace nepa
