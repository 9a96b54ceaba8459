#include "nepa/data/ade20k.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>

#include "decode.h"

namespace nepa {
namespace fs = std::filesystem;

const std::vector<std::string>& ade20k_class_names() {
  static const std::vector<std::string> names = {
      "wall", "building", "sky", "floor", "tree", "ceiling", "road", "bed", "windowpane", "grass", "cabinet",
      "sidewalk", "person", "earth", "door", "table", "mountain", "plant", "curtain", "chair", "car", "water",
      "painting", "sofa", "shelf", "house", "sea", "mirror", "rug", "field", "armchair", "seat", "fence", "desk",
      "rock", "wardrobe", "lamp", "bathtub", "railing", "cushion", "base", "box", "column", "signboard",
      "chest of drawers", "counter", "sand", "sink", "skyscraper", "fireplace", "refrigerator", "grandstand",
      "path", "stairs", "runway", "case", "pool table", "pillow", "screen door", "stairway", "river", "bridge",
      "bookcase", "blind", "coffee table", "toilet", "flower", "book", "hill", "bench", "countertop", "stove",
      "palm", "kitchen island", "computer", "swivel chair", "boat", "bar", "arcade machine", "hovel", "bus",
      "towel", "light", "truck", "tower", "chandelier", "awning", "streetlight", "booth", "television receiver",
      "airplane", "dirt track", "apparel", "pole", "land", "bannister", "escalator", "ottoman", "bottle",
      "buffet", "poster", "stage", "van", "ship", "fountain", "conveyer belt", "canopy", "washer", "plaything",
      "swimming pool", "stool", "barrel", "basket", "waterfall", "tent", "bag", "minibike", "cradle", "oven",
      "ball", "food", "step", "tank", "trade name", "microwave", "pot", "animal", "bicycle", "lake", "dishwasher",
      "screen", "blanket", "sculpture", "hood", "sconce", "vase", "traffic light", "tray", "ashcan", "fan",
      "pier", "crt screen", "plate", "monitor", "bulletin board", "shower", "radiator", "glass", "clock", "flag"};
  return names;
}

namespace {

constexpr int kIgnore = 255;

// A set of its own classes in the ADE20K layout (e.g. the Fashion-MNIST scenes of scenes.h) names them in
// <root>/classes.txt, one per line in label order (after reduce_zero_label).
std::vector<std::string> read_class_names(const fs::path& file) {
  std::ifstream in(file);
  if (!in) throw DataError("ade20k: cannot read " + file.string());
  std::vector<std::string> names;
  for (std::string line; std::getline(in, line);) {
    const auto first = line.find_first_not_of(" \t\r"), last = line.find_last_not_of(" \t\r");
    if (first != std::string::npos) names.push_back(line.substr(first, last - first + 1));
  }
  if (in.bad()) throw DataError("ade20k: cannot read " + file.string());
  if (names.empty()) throw DataError("ade20k: " + file.string() + " names no class (one name per line)");
  // Label maps are 8-bit with 255 as ignore.
  if (names.size() > 255)
    throw DataError(fmt::format("ade20k: {} names {} classes; 8-bit label maps hold at most 255", file.string(),
                                names.size()));
  return names;
}

std::string split_folder(const std::string& split) {
  if (split == "training" || split == "train") return "training";
  if (split == "validation" || split == "val") return "validation";
  throw DataError("ade20k: split '" + split + "' is neither training nor validation");
}

class Ade20kDataset : public Dataset {
 public:
  Ade20kDataset(const fs::path& root, const std::string& split, bool reduce_zero_label)
      : root_(root), reduce_zero_label_(reduce_zero_label) {
    const std::string folder = split_folder(split);
    const fs::path images = root / "images" / folder, annotations = root / "annotations" / folder;
    for (const fs::path& d : {images, annotations})
      if (!fs::is_directory(d))
        throw DataError("ade20k: " + d.string() + " is not a directory (data.root must be the ADEChallengeData2016 "
                        "folder, holding images/ and annotations/)");
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(images))
      if (e.is_regular_file() && e.path().extension() == ".jpg") files.push_back(e.path());
    std::sort(files.begin(), files.end());
    if (files.empty()) throw DataError("ade20k: no .jpg images in " + images.string());
    int64_t missing = 0;
    std::string first_missing;
    for (const auto& f : files) {
      const fs::path ann = annotations / (f.stem().string() + ".png");
      if (!fs::is_regular_file(ann)) {
        if (missing++ == 0) first_missing = ann.string() + " (annotation of " + f.string() + ")";
        continue;
      }
      images_.push_back(f.string());
      annotations_.push_back(ann.string());
    }
    if (missing > 0)
      throw DataError(fmt::format("ade20k: {} of the {} images in {} have no annotation; first: {} is missing",
                                  missing, files.size(), images.string(), first_missing));
    describe_set_ = (root / "images" / folder).string();
    const fs::path classes_file = root / "classes.txt";
    if (fs::exists(classes_file)) {
      names_ = read_class_names(classes_file);
      classes_from_ = classes_file.string() + " lists";
    } else {
      names_ = ade20k_class_names();
      classes_from_ = "ADE20K has";
    }
  }

  int64_t size() const override { return static_cast<int64_t>(images_.size()); }
  int num_classes() const override { return static_cast<int>(names_.size()); }
  int64_t label(int64_t) const override { return -1; }
  std::string describe(int64_t i) const override { return images_.at(i); }
  std::string describe_set() const override { return describe_set_; }
  std::vector<std::string> class_names() const override { return names_; }
  bool has_label_maps() const override { return true; }

  cv::Mat load(int64_t i, int channels) const override {
    return data_detail::decode_image_file(images_.at(i), channels);
  }

  // The map as the model trains on it: reduce_zero_label applied, every value a class index or 255
  // (load_dense_sample checks it against the image's size).
  cv::Mat load_label_map(int64_t i) const override {
    const std::string& path = annotations_.at(i);
    const std::vector<uchar> bytes = data_detail::read_file(path);
    if (bytes.empty()) throw DataError(path + ": empty annotation");
    cv::Mat map;
    try {
      map = cv::imdecode(bytes, cv::IMREAD_UNCHANGED);
    } catch (const cv::Exception& e) {
      throw DataError(path + ": cannot decode the annotation (" + e.err + ")");
    }
    if (map.empty()) throw DataError(path + ": not a decodable annotation");
    if (map.type() != CV_8UC1)
      throw DataError(path + ": an annotation must be an 8-bit single-channel PNG of class indices (this one has " +
                      std::to_string(map.channels()) + " channel(s) of " + std::to_string(map.elemSize1() * 8) +
                      " bits)");
    if (reduce_zero_label_) {
      // 0 ("other objects") is ignored and k becomes k - 1; 255 stays ignored (mmseg's LoadAnnotations).
      cv::Mat reduced;
      map.convertTo(reduced, CV_16S);
      reduced -= 1;
      reduced.setTo(kIgnore, reduced == -1);
      reduced.setTo(kIgnore, reduced == kIgnore - 1);
      reduced.convertTo(map, CV_8U);
    }
    double lo = 0, hi = 0;
    cv::minMaxLoc(map, &lo, &hi, nullptr, nullptr, map != kIgnore);
    if (cv::countNonZero(map != kIgnore) > 0 && hi >= num_classes())
      throw DataError(fmt::format("{}: class {} in the annotation{}, but {} {} classes (0-{})", path,
                                  static_cast<int>(hi), reduce_zero_label_ ? " (after reduce_zero_label)" : "",
                                  classes_from_, num_classes(), num_classes() - 1));
    return map;
  }

 private:
  fs::path root_;
  bool reduce_zero_label_;
  std::vector<std::string> images_, annotations_;
  std::string describe_set_;
  std::vector<std::string> names_;
  std::string classes_from_;  // for messages: "ADE20K has" or "<root>/classes.txt lists"
};

}  // namespace

std::shared_ptr<Dataset> make_ade20k(const std::string& root, const std::string& split, bool reduce_zero_label) {
  if (root.empty()) throw DataError("ade20k: data.root is not set (the ADEChallengeData2016 folder)");
  try {
    return std::make_shared<Ade20kDataset>(fs::path(root), split, reduce_zero_label);
  } catch (const fs::filesystem_error& e) {
    throw DataError("ade20k: cannot list " + root + ": " + e.code().message());
  }
}

}  // namespace nepa
