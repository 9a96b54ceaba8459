#include "nepa/data/transforms.h"

#include "nepa/data/randaugment.h"

#include <ATen/ops/_upsample_bicubic2d_aa.h>
#include <ATen/ops/_upsample_bilinear2d_aa.h>
#include <ATen/ops/from_blob.h>
#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace nepa {

namespace {

uint64_t splitmix64(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ULL);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

// Python's round() (half to even, the default FP rounding mode): torchvision sizes its boxes with int(round(.)).
int py_round(double x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace

SampleRng::SampleRng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

SampleRng SampleRng::for_sample(uint64_t seed, int64_t epoch, int64_t index) {
  // Chained rather than xor-ed together, so (epoch, index) and (index, epoch) do not collide.
  uint64_t x = seed;
  uint64_t h = splitmix64(x);
  x = h ^ static_cast<uint64_t>(epoch);
  h = splitmix64(x);
  x = h ^ static_cast<uint64_t>(index);
  return SampleRng(splitmix64(x));
}

uint64_t SampleRng::next() {
  const uint64_t result = rotl(s_[1] * 5, 7) * 9;
  const uint64_t t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double SampleRng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double SampleRng::uniform(double lo, double hi) { return lo + (hi - lo) * uniform(); }

int64_t SampleRng::randint(int64_t lo, int64_t hi) {
  if (hi <= lo) return lo;
  const uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  if (span == 0) return static_cast<int64_t>(next());  // the full 64-bit range
  // Lemire's multiply-and-reject: exactly uniform, and the same draws on every platform (std:: distributions
  // are implementation-defined).
  const uint64_t threshold = (0 - span) % span;
  while (true) {
    const unsigned __int128 m = static_cast<unsigned __int128>(next()) * span;
    if (static_cast<uint64_t>(m) >= threshold) return lo + static_cast<int64_t>(m >> 64);
  }
}

CropBox random_resized_crop_box(int width, int height, const std::vector<double>& scale,
                                const std::vector<double>& ratio, SampleRng& rng) {
  if (width <= 0 || height <= 0) throw std::invalid_argument("random_resized_crop_box: empty image");
  if (scale.size() != 2 || ratio.size() != 2)
    throw std::invalid_argument("random_resized_crop_box: scale and ratio must be [min, max]");
  const double area = static_cast<double>(width) * height;
  const double log_lo = std::log(ratio[0]), log_hi = std::log(ratio[1]);
  for (int attempt = 0; attempt < 10; ++attempt) {
    const double target_area = area * rng.uniform(scale[0], scale[1]);
    const double aspect = std::exp(rng.uniform(log_lo, log_hi));
    const int w = py_round(std::sqrt(target_area * aspect));
    const int h = py_round(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      // torchvision draws the row before the column.
      const int y = static_cast<int>(rng.randint(0, height - h));
      const int x = static_cast<int>(rng.randint(0, width - w));
      return {x, y, w, h};
    }
  }
  const double in_ratio = static_cast<double>(width) / height;
  const double min_ratio = std::min(ratio[0], ratio[1]), max_ratio = std::max(ratio[0], ratio[1]);
  int w = width, h = height;
  if (in_ratio < min_ratio) {
    h = py_round(w / min_ratio);
  } else if (in_ratio > max_ratio) {
    w = py_round(h * max_ratio);
  }
  return {(width - w) / 2, (height - h) / 2, w, h};
}

int interpolation_flag(const std::string& name) {
  if (name == "bilinear") return cv::INTER_LINEAR;
  if (name == "bicubic") return cv::INTER_CUBIC;
  if (name == "nearest") return cv::INTER_NEAREST;
  if (name == "area") return cv::INTER_AREA;
  throw std::invalid_argument("unknown interpolation '" + name + "' (bilinear, bicubic, nearest, area)");
}

cv::Mat resize_image(const cv::Mat& image, int width, int height, const std::string& interpolation) {
  if (image.empty() || width <= 0 || height <= 0) throw std::invalid_argument("resize_image: empty image or size");
  if (image.depth() != CV_8U || image.channels() > 4)
    throw std::invalid_argument("resize_image: expected a uint8 image with at most 4 channels");
  const bool bilinear = interpolation == "bilinear";
  if (!bilinear && interpolation != "bicubic") {
    cv::Mat out;
    cv::resize(image, out, cv::Size(width, height), 0, 0, interpolation_flag(interpolation));
    return out;
  }
  const int64_t c = image.channels();
  // The HWC pixels as an NCHW tensor in channels-last layout (no copy): the layout ATen's uint8 kernel reads.
  const at::Tensor in = at::from_blob(image.data, {1, c, image.rows, image.cols},
                                      {static_cast<int64_t>(image.step[0]) * image.rows, 1,
                                       static_cast<int64_t>(image.step[0]), c},
                                      at::TensorOptions().dtype(at::kByte));
  const std::vector<int64_t> size = {height, width};
  const at::Tensor resized = bilinear ? at::_upsample_bilinear2d_aa(in, size, /*align_corners=*/false)
                                      : at::_upsample_bicubic2d_aa(in, size, /*align_corners=*/false);
  cv::Mat out(height, width, image.type());
  at::from_blob(out.data, {1, c, height, width}, {int64_t{height} * width * c, 1, int64_t{width} * c, c},
                at::TensorOptions().dtype(at::kByte))
      .copy_(resized);
  return out;
}

cv::Mat train_transform(const cv::Mat& image, const DataConfig& config, SampleRng& rng) {
  const CropBox box = random_resized_crop_box(image.cols, image.rows, config.crop_scale, config.crop_ratio, rng);
  cv::Mat out = resize_image(image(cv::Rect(box.x, box.y, box.w, box.h)), config.image_size, config.image_size,
                             config.interpolation);
  if (rng.uniform() < config.hflip_prob) cv::flip(out, out, 1);
  if (!config.auto_augment.empty()) {
    AugParams params;
    // timm: the fill is the normalisation mean in 0-255, the filter the crop's.
    for (int c = 0; c < std::min<int>(3, static_cast<int>(config.mean.size())); ++c)
      params.fill[c] = std::min(255.0, std::round(255.0 * config.mean[c]));
    params.interpolation = interpolation_flag(config.interpolation);
    out = rand_augment(out, RandAugmentSpec::parse(config.auto_augment), params, rng);
  } else if (config.color_jitter > 0) {
    out = color_jitter(out, config.color_jitter, rng);
  }
  return out;
}

namespace {

int eval_resize_size(const DataConfig& config) { return static_cast<int>(config.image_size / config.eval_crop_pct); }

}  // namespace

cv::Mat eval_transform(const cv::Mat& image, const DataConfig& config) {
  const int size = config.image_size;
  const int s = eval_resize_size(config);
  const int w = image.cols, h = image.rows;
  if (w <= 0 || h <= 0) throw std::invalid_argument("eval_transform: empty image");
  int nw = s, nh = s;
  if (config.eval_resize != "square") {
    // torchvision Resize(int): the long side is int(s * long / short), truncated.
    if (w <= h) nh = static_cast<int>(static_cast<int64_t>(s) * h / w);
    else nw = static_cast<int>(static_cast<int64_t>(s) * w / h);
  }
  cv::Mat resized = image;
  if (nw != w || nh != h) resized = resize_image(image, nw, nh, config.interpolation);
  if (nw < size || nh < size) {
    // torchvision CenterCrop pads a too-small image with zeros, the odd pixel going right/bottom.
    const int pw = std::max(0, size - nw), ph = std::max(0, size - nh);
    cv::Mat padded;
    cv::copyMakeBorder(resized, padded, ph / 2, (ph + 1) / 2, pw / 2, (pw + 1) / 2, cv::BORDER_CONSTANT,
                       cv::Scalar::all(0));
    resized = padded;
    nw = resized.cols;
    nh = resized.rows;
  }
  const int top = py_round((nh - size) / 2.0), left = py_round((nw - size) / 2.0);
  return resized(cv::Rect(left, top, size, size));  // a view: normalise_into reads it row by row
}

std::string describe_eval_view(const DataConfig& config) {
  const int s = eval_resize_size(config);
  const std::string filter =
      config.interpolation + (config.interpolation == "bilinear" || config.interpolation == "bicubic" ? ", antialiased"
                                                                                                       : "");
  const std::string resize = config.eval_resize == "square" ? fmt::format("resize to {0}x{0}", s)
                                                            : fmt::format("resize the shorter side to {}", s);
  return fmt::format("eval view: {} ({}; eval_crop_pct {}, eval_resize {}) -> centre crop {}", resize, filter,
                     config.eval_crop_pct, config.eval_resize, config.image_size);
}

void normalise_into(const cv::Mat& image, const std::vector<double>& mean, const std::vector<double>& std, float* dst) {
  const int c = image.channels(), h = image.rows, w = image.cols;
  if (image.depth() != CV_8U) throw std::invalid_argument("normalise_into: expected a uint8 image");
  if (c > 4) throw std::invalid_argument("normalise_into: at most 4 channels");
  if (static_cast<int>(mean.size()) != c || static_cast<int>(std.size()) != c)
    throw std::invalid_argument("normalise_into: image has " + std::to_string(c) + " channels but mean/std have " +
                                std::to_string(mean.size()) + "/" + std::to_string(std.size()));
  // A table per channel, computed in double: every output is the correctly rounded (x / 255 - mean) / std, and
  // the pixel loop is one load per value.
  float lut[4][256];
  for (int k = 0; k < c; ++k)
    for (int v = 0; v < 256; ++v) lut[k][v] = static_cast<float>((v / 255.0 - mean[k]) / std[k]);
  const size_t plane = static_cast<size_t>(h) * w;
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = image.ptr<uint8_t>(y);
    float* out = dst + static_cast<size_t>(y) * w;
    if (c == 1) {
      for (int x = 0; x < w; ++x) out[x] = lut[0][row[x]];
    } else if (c == 3) {
      float* o0 = out;
      float* o1 = out + plane;
      float* o2 = out + 2 * plane;
      for (int x = 0; x < w; ++x) {
        o0[x] = lut[0][row[3 * x]];
        o1[x] = lut[1][row[3 * x + 1]];
        o2[x] = lut[2][row[3 * x + 2]];
      }
    } else {
      for (int k = 0; k < c; ++k)
        for (int x = 0; x < w; ++x) out[k * plane + x] = lut[k][row[x * c + k]];
    }
  }
}

}  // namespace nepa
