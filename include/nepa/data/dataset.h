// Datasets yield decoded uint8 images one index at a time; the loader (loader.h) turns them into batches.
// Three kinds: ImageFolder (ImageNet layout), Fashion-MNIST (Debian's IDX files, held in memory) and a
// deterministic synthetic set for tests. All are immutable after construction, so worker threads share them.
#pragma once

#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "nepa/config/config.h"

namespace nepa {

// An image that cannot be used (missing, truncated, not an image). The message names the path.
class DataError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual int num_classes() const = 0;  // 0 when unlabelled
  virtual int64_t label(int64_t index) const = 0;
  // Decoded image, HxWxC uint8 with C = `channels` (1: grayscale; 3: RGB order, grayscale replicated).
  // Throws DataError naming the file for an unreadable image.
  virtual cv::Mat load(int64_t index, int channels) const = 0;
  // What to name in messages: the file path, or "<dataset>[index]".
  virtual std::string describe(int64_t index) const = 0;
  // The whole set, for messages: the folder of an ImageFolder, "fashion_mnist <split>", ...
  virtual std::string describe_set() const { return "the dataset"; }
  // Class names by index where the data has them (ImageFolder folders, Fashion-MNIST's ten), else empty.
  virtual std::vector<std::string> class_names() const { return {}; }
  // Segmentation sets: a class map per image (CV_8UC1, the image's size, 255 = ignore). label() is -1 there.
  virtual bool has_label_maps() const { return false; }
  // Throws DataError naming the file for an unreadable or mismatched map; std::logic_error without label maps.
  virtual cv::Mat load_label_map(int64_t index) const;

  // Unreadable samples met by any loader of this dataset (train loop and k-NN loaders share it), so a bad file
  // is decoded, logged and counted once per run, not once per epoch or per loader. Thread-safe. A view of
  // another dataset (a subset) keeps its marks in that dataset, so every view of one set counts alike.
  // Returns true the first time `index` is marked.
  virtual bool mark_unreadable(int64_t index) const;
  virtual bool known_unreadable(int64_t index) const;
  virtual int64_t unreadable_count() const;

 private:
  mutable std::mutex bad_mutex_;
  mutable std::set<int64_t> bad_;
};

// An image and its label map, for sets with label maps: a map of another size than its image is an unreadable
// sample (DataError naming both files and sizes), like a file that does not decode.
struct DenseSample {
  cv::Mat image;   // as Dataset::load
  cv::Mat labels;  // CV_8UC1, the image's size, 255 = ignore
};
DenseSample load_dense_sample(const Dataset& dataset, int64_t index, int channels);

// An image file decoded as the datasets decode theirs: 8-bit RGB (channels 3) or grey (1). Throws DataError naming
// the file.
cv::Mat read_image(const std::string& path, int channels);

// ImageNet layout: <root>/<class>/<image>, class index = position of the folder name in sorted order.
// Extensions .jpg .jpeg .png .webp .bmp (any case). `file_list` (optional) restricts the set to the listed
// "<class>/<file>" paths, one per line (a listed file that is not there is an error). Throws DataError if root is
// missing or holds no class folder.
std::shared_ptr<Dataset> make_image_folder(const std::string& root, const std::string& file_list = "");

// Fashion-MNIST split "train" | "test"; root empty = kDefaultFashionMnistRoot.
std::shared_ptr<Dataset> make_fashion_mnist(const std::string& root, const std::string& split);

// `size` images of `image_size`x`image_size` with 10 classes; image i is a function of (i, split) only and its
// label is i % 10. Class c is an oriented stripe pattern so a model has something learnable.
std::shared_ptr<Dataset> make_synthetic(int64_t size, int image_size, const std::string& split);

// From the data section: image_folder reads <root>/<split>; fashion_mnist and synthetic as above.
std::shared_ptr<Dataset> make_dataset(const DataConfig& config, const std::string& split);

}  // namespace nepa
