#include "nepa/data/dataset.h"

#include <fmt/format.h>
#include <opencv2/imgcodecs.hpp>
#include <opencv2/imgproc.hpp>
#include <sys/stat.h>
#include <torch/torch.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <cmath>
#include <csetjmp>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>

#include "nepa/data/ade20k.h"
#include "nepa/data/fashion_mnist.h"
#include "nepa/data/transforms.h"
#include "decode.h"
#include "png_decode.h"

// After <cstdio>: jpeglib.h uses FILE without including it.
#include <jerror.h>
#include <jpeglib.h>

namespace nepa {
namespace fs = std::filesystem;

namespace {

void check_channels(int channels) {
  if (channels != 1 && channels != 3)
    throw std::invalid_argument("Dataset::load: channels must be 1 or 3, got " + std::to_string(channels));
}

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

std::string errno_text() { return std::error_code(errno, std::generic_category()).message(); }

}  // namespace

std::vector<uchar> data_detail::read_file(const std::string& path) {
  std::unique_ptr<FILE, int (*)(FILE*)> f(std::fopen(path.c_str(), "rb"), &std::fclose);
  if (!f) throw DataError(path + ": cannot open (" + errno_text() + ")");
  struct stat st {};
  if (fstat(fileno(f.get()), &st) != 0) throw DataError(path + ": cannot stat (" + errno_text() + ")");
  std::vector<uchar> bytes(static_cast<size_t>(st.st_size));
  size_t got = bytes.empty() ? 0 : std::fread(bytes.data(), 1, bytes.size(), f.get());
  if (got != bytes.size()) throw DataError(path + ": read failed (" + errno_text() + ")");
  return bytes;
}

namespace {

uint32_t be32(const uchar* p) { return (uint32_t(p[0]) << 24) | (uint32_t(p[1]) << 16) | (uint32_t(p[2]) << 8) | p[3]; }
uint32_t le32(const uchar* p) { return (uint32_t(p[3]) << 24) | (uint32_t(p[2]) << 16) | (uint32_t(p[1]) << 8) | p[0]; }

// libjpeg turns a cut-off JPEG into a partly grey image with only a warning, so completeness is checked on the
// bytes. The marker segments before the first scan are walked by their lengths (an EXIF thumbnail, with its own
// end marker, lives inside one); after the scan header, entropy-coded 0xFF bytes are always followed by 0x00 or
// a restart marker, so an FF D9 there can only be the end-of-image marker. Bytes after it (camera trailers,
// motion-photo videos) are allowed, as PIL allows them.
bool jpeg_complete(const std::vector<uchar>& b) {
  const size_t n = b.size();
  size_t p = 2;
  while (true) {
    if (p >= n || b[p] != 0xFF) return false;
    while (p < n && b[p] == 0xFF) ++p;  // fill bytes
    if (p >= n) return false;
    const uchar marker = b[p++];
    if (marker == 0xD9) return true;
    if (marker == 0x01 || (marker >= 0xD0 && marker <= 0xD7)) continue;  // no length field
    if (p + 2 > n) return false;
    const size_t len = (size_t(b[p]) << 8) | b[p + 1];
    if (len < 2) return false;
    p += len;
    if (marker == 0xDA) break;  // start of scan
  }
  for (size_t q = n; q >= p + 2; --q)
    if (b[q - 2] == 0xFF && b[q - 1] == 0xD9) return true;
  return false;
}

bool is_png(const std::vector<uchar>& b) {
  static const uchar png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n'};
  return b.size() >= 8 && std::equal(png_sig, png_sig + 8, b.begin());
}

// A PNG is complete when its chunk chain reaches IEND; libpng may hand back a partial image otherwise.
bool png_complete(const std::vector<uchar>& b) {
  size_t p = 8;
  while (p + 8 <= b.size()) {
    const uint64_t len = be32(&b[p]);
    if (std::equal(b.begin() + p + 4, b.begin() + p + 8, "IEND")) return true;
    p += 12 + len;
  }
  return false;
}

// Why these bytes cannot be a whole image, or nullptr when they may be (the decoder has the final word).
const char* incomplete_reason(const std::vector<uchar>& b) {
  const size_t n = b.size();
  if (n >= 3 && b[0] == 0xFF && b[1] == 0xD8 && b[2] == 0xFF)
    return jpeg_complete(b) ? nullptr : "truncated JPEG (no end-of-image marker)";
  if (is_png(b)) return png_complete(b) ? nullptr : "truncated PNG (no IEND chunk)";
  if (n >= 12 && std::equal(b.begin(), b.begin() + 4, "RIFF") && std::equal(b.begin() + 8, b.begin() + 12, "WEBP"))
    return uint64_t(le32(&b[4])) + 8 > n ? "truncated WebP (shorter than its RIFF header says)" : nullptr;
  if (n >= 2 && b[0] == 'B' && b[1] == 'M')
    return n < 54 || le32(&b[2]) > n ? "truncated BMP (shorter than its header says)" : nullptr;
  return nullptr;
}

// JPEG goes straight through libjpeg(-turbo), the library PIL uses: decoded directly in RGB (or grey) order, it
// is about twice as fast as cv::imdecode followed by the BGR -> RGB swap, and pixel-identical to PIL for the same
// libjpeg version (ISLOW DCT, fancy upsampling: both libraries' defaults). libjpeg reports errors through a
// callback that must not return, hence setjmp/longjmp, confined to run_jpeg() where nothing has a destructor.
struct JpegDecoder {
  jpeg_error_mgr mgr;  // first member: libjpeg hands back a pointer to it
  std::jmp_buf jump;
  bool created = false;
  bool premature_end = false;
  char message[JMSG_LENGTH_MAX] = {};
  jpeg_decompress_struct cinfo;
};

void jpeg_error_exit(j_common_ptr cinfo) {
  auto* d = reinterpret_cast<JpegDecoder*>(cinfo->err);
  (*cinfo->err->format_message)(cinfo, d->message);
  std::longjmp(d->jump, 1);
}

void jpeg_emit_message(j_common_ptr cinfo, int level) {
  // Warnings are silent (PIL ignores them too) except a premature end, which is a truncated file.
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF)
    reinterpret_cast<JpegDecoder*>(cinfo->err)->premature_end = true;
}

enum class JpegResult { kOk, kUnsupported, kError };

JpegResult run_jpeg(JpegDecoder* d, const std::vector<uchar>* bytes, int channels, cv::Mat* out) {
  if (setjmp(d->jump)) return JpegResult::kError;
  jpeg_create_decompress(&d->cinfo);
  d->created = true;
  jpeg_mem_src(&d->cinfo, bytes->data(), static_cast<unsigned long>(bytes->size()));
  jpeg_read_header(&d->cinfo, TRUE);
  const J_COLOR_SPACE cs = d->cinfo.jpeg_color_space;
  // CMYK / YCCK (a few ImageNet files) and RGB-to-grey are left to OpenCV.
  if (!(cs == JCS_YCbCr || cs == JCS_GRAYSCALE || (cs == JCS_RGB && channels == 3))) return JpegResult::kUnsupported;
  d->cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
  jpeg_start_decompress(&d->cinfo);
  out->create(static_cast<int>(d->cinfo.output_height), static_cast<int>(d->cinfo.output_width),
              channels == 1 ? CV_8UC1 : CV_8UC3);
  while (d->cinfo.output_scanline < d->cinfo.output_height) {
    JSAMPROW rows[8];
    const int n = std::min<int>(8, static_cast<int>(d->cinfo.output_height - d->cinfo.output_scanline));
    for (int k = 0; k < n; ++k) rows[k] = out->ptr(static_cast<int>(d->cinfo.output_scanline) + k);
    jpeg_read_scanlines(&d->cinfo, rows, static_cast<JDIMENSION>(n));
  }
  jpeg_finish_decompress(&d->cinfo);
  return JpegResult::kOk;
}

// The decoded JPEG, or an empty Mat when its colour space is one for cv::imdecode. Throws DataError.
cv::Mat decode_jpeg(const std::vector<uchar>& bytes, int channels, const std::string& path) {
  JpegDecoder d;
  d.cinfo.err = jpeg_std_error(&d.mgr);
  d.mgr.error_exit = jpeg_error_exit;
  d.mgr.emit_message = jpeg_emit_message;
  cv::Mat out;
  const JpegResult r = run_jpeg(&d, &bytes, channels, &out);
  if (d.created) jpeg_destroy_decompress(&d.cinfo);
  if (r == JpegResult::kError) throw DataError(path + ": cannot decode JPEG (" + d.message + ")");
  if (d.premature_end) throw DataError(path + ": truncated JPEG (premature end of data)");
  return r == JpegResult::kOk ? out : cv::Mat();
}

}  // namespace

cv::Mat data_detail::decode_image_file(const std::string& path, int channels) {
  check_channels(channels);
  const std::vector<uchar> bytes = read_file(path);
  if (bytes.empty()) throw DataError(path + ": empty file");
  if (const char* why = incomplete_reason(bytes)) throw DataError(path + ": " + why);
  if (bytes.size() >= 3 && bytes[0] == 0xFF && bytes[1] == 0xD8 && bytes[2] == 0xFF) {
    cv::Mat img = decode_jpeg(bytes, channels, path);
    if (!img.empty()) return img;
  }
  if (is_png(bytes)) {
    cv::Mat img = data_detail::decode_png(bytes, channels, path);
    if (!img.empty()) return img;
  }
  // EXIF orientation is ignored, as PIL's Image.open (torchvision's loader) ignores it.
  const int flags = (channels == 1 ? cv::IMREAD_GRAYSCALE : cv::IMREAD_COLOR) | cv::IMREAD_IGNORE_ORIENTATION;
  cv::Mat img;
  try {
    img = cv::imdecode(bytes, flags);
    if (!img.empty() && channels == 3) cv::cvtColor(img, img, cv::COLOR_BGR2RGB);
  } catch (const cv::Exception& e) {
    throw DataError(path + ": cannot decode (" + e.err + ")");
  }
  if (img.empty()) throw DataError(path + ": not a decodable image");
  return img;
}

namespace {

class ImageFolderDataset : public Dataset {
 public:
  ImageFolderDataset(const std::string& root, const std::string& file_list) : root_(root) {
    if (!fs::is_directory(root_)) throw DataError("image_folder: " + root + " is not a directory");
    for (const auto& e : fs::directory_iterator(root_))
      if (e.is_directory()) classes_.push_back(e.path().filename().string());
    std::sort(classes_.begin(), classes_.end());
    if (classes_.empty())
      throw DataError("image_folder: " + root + " has no class folders (expected " + root + "/<class>/<image>)");
    std::map<std::string, bool> wanted;  // "<class>/<file>" -> seen
    if (!file_list.empty()) {
      std::ifstream in(file_list);
      if (!in) throw DataError("image_folder: cannot read data.file_list " + file_list);
      for (std::string line; std::getline(in, line);) {
        while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
        if (!line.empty()) wanted.emplace(line, false);
      }
      if (wanted.empty()) throw DataError("image_folder: data.file_list " + file_list + " lists no file");
    }
    for (size_t c = 0; c < classes_.size(); ++c) {
      // torchvision's order: sorted(os.walk(class_dir)), then sorted file names within each folder.
      std::vector<std::pair<std::string, std::string>> files;
      for (const auto& e :
           fs::recursive_directory_iterator(root_ / classes_[c], fs::directory_options::follow_directory_symlink))
        if (e.is_regular_file() && is_image_file(e.path()))
          files.emplace_back(e.path().parent_path().string(), e.path().filename().string());
      std::sort(files.begin(), files.end());
      for (const auto& [dir, name] : files) {
        fs::path full = fs::path(dir) / name;
        if (!wanted.empty()) {
          auto it = wanted.find(full.lexically_relative(root_).generic_string());
          if (it == wanted.end()) continue;
          it->second = true;
        }
        paths_.push_back(full.string());
        labels_.push_back(static_cast<int64_t>(c));
      }
    }
    if (!wanted.empty() && paths_.size() != wanted.size()) {
      auto missing = std::find_if(wanted.begin(), wanted.end(), [](const auto& w) { return !w.second; });
      throw DataError("image_folder: " + std::to_string(wanted.size() - paths_.size()) + " of the " +
                      std::to_string(wanted.size()) + " files in " + file_list + " are not images under " + root +
                      " (first: " + missing->first + ")");
    }
    if (paths_.empty()) throw DataError("image_folder: no images under " + root);
  }
  int64_t size() const override { return static_cast<int64_t>(paths_.size()); }
  int num_classes() const override { return static_cast<int>(classes_.size()); }
  int64_t label(int64_t i) const override { return labels_.at(i); }
  std::string describe(int64_t i) const override { return paths_.at(i); }
  std::string describe_set() const override { return root_.string(); }
  std::vector<std::string> class_names() const override { return classes_; }
  cv::Mat load(int64_t i, int channels) const override {
    return data_detail::decode_image_file(paths_.at(i), channels);
  }

 private:
  fs::path root_;
  std::vector<std::string> classes_, paths_;
  std::vector<int64_t> labels_;
};

class FashionMnistDataset : public Dataset {
 public:
  FashionMnistDataset(const std::string& root, const std::string& split)
      : data_(load_fashion_mnist(root, split)),
        name_("fashion_mnist " + split + " (" + (root.empty() ? std::string(kDefaultFashionMnistRoot) : root) + ")") {
    data_.images = data_.images.contiguous();
    data_.labels = data_.labels.contiguous();
  }
  int64_t size() const override { return data_.images.size(0); }
  int num_classes() const override { return 10; }
  int64_t label(int64_t i) const override { return data_.labels.data_ptr<int64_t>()[check(i)]; }
  std::string describe(int64_t i) const override { return "fashion_mnist[" + std::to_string(i) + "]"; }
  std::string describe_set() const override { return name_; }
  std::vector<std::string> class_names() const override {
    return {"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"};
  }
  cv::Mat load(int64_t i, int channels) const override {
    check_channels(channels);
    const int h = static_cast<int>(data_.images.size(1)), w = static_cast<int>(data_.images.size(2));
    const uint8_t* src = data_.images.data_ptr<uint8_t>() + check(i) * h * w;
    // A header over the shared tensor; the result owns its pixels so it may outlive the dataset.
    const cv::Mat view(h, w, CV_8UC1, const_cast<uint8_t*>(src));
    cv::Mat out;
    if (channels == 1) view.copyTo(out);
    else cv::cvtColor(view, out, cv::COLOR_GRAY2RGB);
    return out;
  }

 private:
  int64_t check(int64_t i) const {
    if (i < 0 || i >= size()) throw std::out_of_range("fashion_mnist: index " + std::to_string(i) + " out of range");
    return i;
  }
  LabelledImages data_;
  std::string name_;
};

// Stripes whose orientation is the class: enough structure for a loss to fall and a k-NN to beat chance.
class SyntheticDataset : public Dataset {
 public:
  SyntheticDataset(int64_t size, int image_size, const std::string& split)
      : size_(size), image_size_(image_size), salt_(fnv1a(split)), name_("synthetic " + split) {
    if (size <= 0 || image_size <= 0) throw DataError("synthetic: size and image_size must be positive");
  }
  int64_t size() const override { return size_; }
  int num_classes() const override { return 10; }
  int64_t label(int64_t i) const override { return i % 10; }
  std::string describe(int64_t i) const override { return "synthetic[" + std::to_string(i) + "]"; }
  std::string describe_set() const override { return name_; }
  cv::Mat load(int64_t i, int channels) const override {
    check_channels(channels);
    if (i < 0 || i >= size_) throw std::out_of_range("synthetic: index " + std::to_string(i) + " out of range");
    SampleRng rng = SampleRng::for_sample(salt_, 0, i);
    const int s = image_size_;
    const double angle = M_PI * static_cast<double>(i % 10) / 10.0;
    const double freq = 2.0 + rng.uniform(0.0, 2.0), phase = rng.uniform(0.0, 2 * M_PI);
    const double cx = std::cos(angle), cy = std::sin(angle);
    cv::Mat img(s, s, CV_8UC3);
    for (int y = 0; y < s; ++y) {
      auto* row = img.ptr<cv::Vec3b>(y);
      for (int x = 0; x < s; ++x) {
        const double t = 2 * M_PI * freq * (x * cx + y * cy) / s + phase;
        const double v = 127.5 + 90.0 * std::sin(t) + rng.uniform(-20.0, 20.0);
        const auto px = cv::saturate_cast<uchar>(v);
        row[x] = cv::Vec3b(px, cv::saturate_cast<uchar>(255 - v), px);
      }
    }
    if (channels == 1) cv::cvtColor(img, img, cv::COLOR_RGB2GRAY);
    return img;
  }

 private:
  int64_t size_;
  int image_size_;
  uint64_t salt_;
  std::string name_;
};

}  // namespace

cv::Mat read_image(const std::string& path, int channels) { return data_detail::decode_image_file(path, channels); }

DenseSample load_dense_sample(const Dataset& dataset, int64_t index, int channels) {
  DenseSample s{dataset.load(index, channels), dataset.load_label_map(index)};
  if (s.image.size() != s.labels.size())
    throw DataError(fmt::format("{}: the image is {}x{} but its label map is {}x{}", dataset.describe(index),
                                s.image.cols, s.image.rows, s.labels.cols, s.labels.rows));
  return s;
}

cv::Mat Dataset::load_label_map(int64_t index) const {
  throw std::logic_error("Dataset::load_label_map: " + describe(index) + " belongs to a set without label maps");
}

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
  try {
    return std::make_shared<ImageFolderDataset>(root, file_list);
  } catch (const fs::filesystem_error& e) {
    throw DataError("image_folder: cannot list " + root + ": " + e.code().message() + " (" + e.path1().string() + ")");
  }
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
  if (config.dataset == "image_folder") {
    if (config.root.empty()) throw DataError("image_folder: data.root is not set");
    return make_image_folder((fs::path(config.root) / split).string(), config.file_list);
  }
  if (config.dataset == "ade20k") return make_ade20k(config.root, split, config.reduce_zero_label);
  if (config.dataset == "fashion_mnist") return make_fashion_mnist(config.root, split);
  if (config.dataset == "synthetic") return make_synthetic(config.synthetic_size, config.image_size, split);
  throw DataError("unknown dataset '" + config.dataset + "' (fashion_mnist, image_folder, ade20k, synthetic)");
}

}  // namespace nepa
