#include "nepa/data/scenes.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <opencv2/core.hpp>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <memory>
#include <stdexcept>
#include <vector>

#include "nepa/data/fashion_mnist.h"
#include "nepa/data/transforms.h"

namespace nepa {
namespace fs = std::filesystem;

namespace {

constexpr int kItemSide = 28;          // Fashion-MNIST
constexpr int kMinItemForeground = 16;  // pixels; see make_scene
constexpr int kMaxItemDraws = 100;
constexpr int kMaxCount = 1000000;  // scene_NNNNNN

// The raw annotation values, mmseg's ADE20K convention: 0 is "other" (ignored after reduce_zero_label).
constexpr uint8_t kAmbiguous = 0, kBackground = 1, kFirstClass = 2;

int item_side(int side, double scale) { return static_cast<int>(std::lround(side * scale)); }

nlohmann::json scene_record(const SceneOptions& o, const std::string& source) {
  // Everything the pixels depend on; "format" changes whenever make_scene draws or composes differently.
  return {{"format", "nepa fmnist scenes 1"}, {"source", source},        {"size", o.size},
          {"items_min", o.items_min},         {"items_max", o.items_max}, {"scale_min", o.scale_min},
          {"scale_max", o.scale_max},         {"seed", o.seed},           {"train_count", o.train_count},
          {"val_count", o.val_count},         {"fg_threshold", o.fg_threshold}, {"bg_threshold", o.bg_threshold}};
}

// True when `out` is a finished set made from `record`; false when it is absent or an empty directory (to be
// written); throws naming `out` for anything else, so a run never writes beside or over files it did not make.
bool holds_same_set(const fs::path& out, const nlohmann::json& record) {
  if (!fs::exists(out)) return false;
  if (!fs::is_directory(out)) throw std::runtime_error(out.string() + " exists and is not a directory");
  if (fs::is_empty(out)) return false;
  const fs::path json_path = out / "scenes.json";
  if (!fs::is_regular_file(json_path))
    throw std::runtime_error(out.string() + " is not empty and holds no finished scene set (no scenes.json): "
                             "refusing to write scenes into it");
  nlohmann::json there;
  try {
    std::ifstream in(json_path);
    there = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(json_path.string() + " is not a scene record (" + e.what() + ")");
  }
  if (there == record) return true;
  std::string diff;
  for (const auto& [key, value] : record.items()) {
    const std::string was = there.contains(key) ? there[key].dump() : "absent";
    if (was != value.dump()) diff += fmt::format("{}{} {} there, {} asked", diff.empty() ? "" : "; ", key, was,
                                                 value.dump());
  }
  throw std::runtime_error(out.string() + " holds scenes made otherwise (" + diff +
                           "): choose another output folder or remove it");
}

void write_or_throw(const fs::path& path, const cv::Mat& m, const std::vector<int>& params) {
  bool ok = false;
  try {
    ok = cv::imwrite(path.string(), m, params);
  } catch (const cv::Exception& e) {
    throw std::runtime_error("cannot write " + path.string() + ": " + e.err);
  }
  if (!ok) throw std::runtime_error("cannot write " + path.string());
}

void write_split(const Dataset& items, const SceneOptions& o, bool validation, int count, const fs::path& root) {
  const std::string folder = validation ? "validation" : "training";
  const fs::path images = root / "images" / folder, annotations = root / "annotations" / folder;
  fs::create_directories(images);
  fs::create_directories(annotations);
  for (int i = 0; i < count; ++i) {
    const Scene s = make_scene(items, o, validation, i);
    const std::string name = fmt::format("scene_{:06d}", i);
    write_or_throw(images / (name + ".jpg"), s.image, {cv::IMWRITE_JPEG_QUALITY, 95});
    write_or_throw(annotations / (name + ".png"), s.labels, {});
  }
}

void write_text(const fs::path& path, const std::string& text) {
  std::ofstream out(path, std::ios::binary);
  out << text;
  out.close();
  if (!out) throw std::runtime_error("cannot write " + path.string());
}

}  // namespace

void check_scene_options(const SceneOptions& o) {
  auto bad = [](const std::string& what) { throw std::invalid_argument("scenes: " + what); };
  if (o.size < 1 || o.size > 4096) bad(fmt::format("size must be in 1-4096 (got {})", o.size));
  if (o.items_min < 1 || o.items_max > 64)
    bad(fmt::format("items per scene must be in 1-64 (got {}-{})", o.items_min, o.items_max));
  if (o.items_max < o.items_min)
    bad(fmt::format("items_max ({}) is below items_min ({})", o.items_max, o.items_min));
  if (!(o.scale_min >= 1.0) || !(o.scale_max >= o.scale_min) || !(o.scale_max <= 64.0))
    bad(fmt::format("item scales must satisfy 1 <= scale_min <= scale_max <= 64 (got {}-{})", o.scale_min,
                    o.scale_max));
  if (item_side(kItemSide, o.scale_max) > o.size)
    bad(fmt::format("a {0}x{0} canvas cannot hold a {1}x{1} item (28 px at scale {2})", o.size,
                    item_side(kItemSide, o.scale_max), o.scale_max));
  for (const auto& [name, n] : {std::pair{"train_count", o.train_count}, std::pair{"val_count", o.val_count}})
    if (n < 1 || n > kMaxCount) bad(fmt::format("{} must be in 1-{} (got {})", name, kMaxCount, n));
  if (!(0 < o.bg_threshold && o.bg_threshold < o.fg_threshold && o.fg_threshold <= 255))
    bad(fmt::format("thresholds must satisfy 0 < bg_threshold < fg_threshold <= 255 (got {} and {})",
                    o.bg_threshold, o.fg_threshold));
}

Scene make_scene(const Dataset& items, const SceneOptions& o, bool validation, int64_t index) {
  check_scene_options(o);
  if (items.size() < 1 || items.num_classes() < 1 || items.num_classes() > 255 - kFirstClass)
    throw std::invalid_argument(fmt::format("scenes: {} has {} images of {} classes (need >= 1 image, 1-253 "
                                            "classes)", items.describe_set(), items.size(), items.num_classes()));
  // One generator per scene, as the loader's per-sample ones: scene i does not depend on the counts.
  SampleRng rng = SampleRng::for_sample(o.seed, validation ? 1 : 0, index);
  Scene s{cv::Mat::zeros(o.size, o.size, CV_8UC1), cv::Mat(o.size, o.size, CV_8UC1, cv::Scalar(kBackground))};
  const int n = static_cast<int>(rng.randint(o.items_min, o.items_max));
  for (int k = 0; k < n; ++k) {
    cv::Mat item;
    int64_t source = -1, label = -1;
    // A few items are nearly black (sandals of thin straps, faint garments): one of them on top would leave a scene
    // without a visible class.
    for (int draw = 0;; ++draw) {
      if (draw == kMaxItemDraws)
        throw std::runtime_error(fmt::format("scenes: no item of {} has {} pixels >= {} in {} draws",
                                             items.describe_set(), kMinItemForeground, o.fg_threshold, draw));
      source = rng.randint(0, items.size() - 1);
      item = items.load(source, 1);
      label = items.label(source);
      if (cv::countNonZero(item >= o.fg_threshold) >= kMinItemForeground) break;
    }
    if (label < 0 || label >= items.num_classes())
      throw std::runtime_error(fmt::format("scenes: {} has label {}", items.describe(source), label));
    const double scale = rng.uniform(o.scale_min, o.scale_max);
    const int w = item_side(item.cols, scale), h = item_side(item.rows, scale);
    if (w != item.cols || h != item.rows) cv::resize(item, item, cv::Size(w, h), 0, 0, cv::INTER_LINEAR);
    if (w > o.size || h > o.size)
      throw std::invalid_argument(fmt::format("scenes: a {}x{} item does not fit a {}x{} canvas", w, h, o.size,
                                              o.size));
    const int x0 = static_cast<int>(rng.randint(0, o.size - w)), y0 = static_cast<int>(rng.randint(0, o.size - h));
    const auto cls = static_cast<uint8_t>(label + kFirstClass);
    for (int y = 0; y < h; ++y) {
      const uint8_t* src = item.ptr<uint8_t>(y);
      uint8_t* image = s.image.ptr<uint8_t>(y0 + y) + x0;
      uint8_t* labels = s.labels.ptr<uint8_t>(y0 + y) + x0;
      for (int x = 0; x < w; ++x) {
        if (src[x] < o.bg_threshold) continue;
        image[x] = src[x];
        labels[x] = src[x] >= o.fg_threshold ? cls : kAmbiguous;
      }
    }
  }
  return s;
}

// Removes the `<out>.tmp-<pid>` folders of writers whose process is gone (killed mid-write: the catch below never
// ran); a live writer's folder is kept. The checkpoints' rule (CheckpointDir::remove_stale_temp_files).
static void remove_stale_temp_dirs(const fs::path& out) {
  const fs::path parent = out.has_parent_path() ? out.parent_path() : fs::path(".");
  if (!fs::is_directory(parent)) return;
  const std::string prefix = out.filename().string() + ".tmp-";
  for (const auto& e : fs::directory_iterator(parent)) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) != 0 || !e.is_directory()) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.empty() || digits.find_first_not_of("0123456789") != std::string::npos) continue;
    const pid_t pid = static_cast<pid_t>(std::stoll(digits));
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // its writer may still be at work
    std::error_code ec;
    fs::remove_all(e.path(), ec);
  }
}

bool write_fmnist_scenes(const std::string& fashion_mnist_root, const std::string& out_dir,
                         const SceneOptions& options) {
  check_scene_options(options);
  if (out_dir.empty()) throw std::invalid_argument("scenes: no output folder given");
  fs::path out = fs::path(out_dir).lexically_normal();
  if (!out.has_filename()) out = out.parent_path();  // "dir/": the temp folder goes beside dir, not into it
  const fs::path source = fashion_mnist_root.empty() ? kDefaultFashionMnistRoot : fashion_mnist_root;
  const nlohmann::json record = scene_record(options, fs::weakly_canonical(source).string());
  if (holds_same_set(out, record)) return false;

  const auto train = make_fashion_mnist(fashion_mnist_root, "train");
  const auto test = make_fashion_mnist(fashion_mnist_root, "test");
  remove_stale_temp_dirs(out);
  const fs::path tmp = out.string() + ".tmp-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    write_split(*train, options, /*validation=*/false, options.train_count, tmp);
    write_split(*test, options, /*validation=*/true, options.val_count, tmp);
    std::string classes = "background\n";
    for (const std::string& name : train->class_names()) classes += name + "\n";
    write_text(tmp / "classes.txt", classes);
    write_text(tmp / "scenes.json", record.dump(2) + "\n");
    if (out.has_parent_path()) fs::create_directories(out.parent_path());
    // rename(2) replaces an empty directory, and fails on a non-empty one: another run may have finished first.
    fs::rename(tmp, out, ec);
    if (ec) {
      const std::string reason = ec.message();
      if (holds_same_set(out, record)) {
        fs::remove_all(tmp, ec);
        return false;
      }
      throw std::runtime_error("cannot rename " + tmp.string() + " to " + out.string() + ": " + reason);
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  return true;
}

}  // namespace nepa
