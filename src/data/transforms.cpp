#include "nepa/data/transforms.h"

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

// Python's round(): half to even, which torchvision's int(round(...)) uses for crop sizes.
int py_round(double x) { return static_cast<int>(std::nearbyint(x)); }

}  // namespace

SampleRng::SampleRng(uint64_t seed) {
  uint64_t x = seed;
  for (auto& s : s_) s = splitmix64(x);
}

SampleRng SampleRng::for_sample(uint64_t seed, int64_t epoch, int64_t index) {
  uint64_t x = seed;
  uint64_t h = splitmix64(x);
  x = h ^ static_cast<uint64_t>(epoch);
  h = splitmix64(x);
  x = h ^ static_cast<uint64_t>(index);
  return SampleRng(splitmix64(x));
}

uint64_t SampleRng::next() {
  uint64_t result = rotl(s_[1] * 5, 7) * 9;
  uint64_t t = s_[1] << 17;
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
  uint64_t span = static_cast<uint64_t>(hi - lo) + 1;
  return lo + static_cast<int64_t>(next() % span);  // span is tiny next to 2^64: the bias is negligible
}

CropBox random_resized_crop_box(int width, int height, const std::vector<double>& scale,
                                const std::vector<double>& ratio, SampleRng& rng) {
  const double area = static_cast<double>(width) * height;
  const double log_lo = std::log(ratio.at(0)), log_hi = std::log(ratio.at(1));
  for (int attempt = 0; attempt < 10; ++attempt) {
    double target_area = area * rng.uniform(scale.at(0), scale.at(1));
    double aspect = std::exp(rng.uniform(log_lo, log_hi));
    int w = py_round(std::sqrt(target_area * aspect));
    int h = py_round(std::sqrt(target_area / aspect));
    if (w > 0 && w <= width && h > 0 && h <= height) {
      int y = static_cast<int>(rng.randint(0, height - h));
      int x = static_cast<int>(rng.randint(0, width - w));
      return {x, y, w, h};
    }
  }
  // Fallback: the whole image, cut to the nearest allowed aspect ratio, centred.
  double in_ratio = static_cast<double>(width) / height;
  int w = width, h = height;
  if (in_ratio < ratio[0]) {
    h = py_round(w / ratio[0]);
  } else if (in_ratio > ratio[1]) {
    w = py_round(h * ratio[1]);
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

cv::Mat train_transform(const cv::Mat& image, const DataConfig& config, SampleRng& rng) {
  CropBox box = random_resized_crop_box(image.cols, image.rows, config.crop_scale, config.crop_ratio, rng);
  cv::Mat out;
  // OpenCV's bilinear/bicubic do not antialias when shrinking (PIL does); at ImageNet scales the crops are
  // mostly enlarged or mildly shrunk, where the two agree closely.
  cv::resize(image(cv::Rect(box.x, box.y, box.w, box.h)), out, cv::Size(config.image_size, config.image_size), 0, 0,
             interpolation_flag(config.interpolation));
  if (rng.uniform() < config.hflip_prob) cv::flip(out, out, 1);
  return out;
}

cv::Mat eval_transform(const cv::Mat& image, const DataConfig& config) {
  const int size = config.image_size;
  // timm's eval: scale = floor(size / crop_pct) on the shorter side (256 for 224 at 0.875), then centre crop.
  const int short_side = static_cast<int>(std::floor(size / config.eval_crop_pct + 1e-9));
  int w = image.cols, h = image.rows;
  int nw, nh;
  if (w <= h) {
    nw = short_side;
    nh = static_cast<int>(static_cast<int64_t>(short_side) * h / w);
  } else {
    nh = short_side;
    nw = static_cast<int>(static_cast<int64_t>(short_side) * w / h);
  }
  cv::Mat resized;
  if (nw == w && nh == h) resized = image;
  else cv::resize(image, resized, cv::Size(nw, nh), 0, 0, interpolation_flag(config.interpolation));
  int top = py_round((nh - size) / 2.0), left = py_round((nw - size) / 2.0);
  if (top < 0 || left < 0) {
    cv::Mat padded;  // smaller than the crop (crop_pct > 1 is rejected, so only from rounding): pad with zeros
    cv::copyMakeBorder(resized, padded, std::max(0, -top), std::max(0, size - nh - std::max(0, -top)),
                       std::max(0, -left), std::max(0, size - nw - std::max(0, -left)), cv::BORDER_CONSTANT, 0);
    resized = padded;
    top = std::max(top, 0);
    left = std::max(left, 0);
  }
  return resized(cv::Rect(left, top, size, size)).clone();
}

void normalise_into(const cv::Mat& image, const std::vector<double>& mean, const std::vector<double>& std, float* dst) {
  const int c = image.channels(), h = image.rows, w = image.cols;
  if (image.depth() != CV_8U) throw std::invalid_argument("normalise_into: expected a uint8 image");
  if (static_cast<int>(mean.size()) != c || static_cast<int>(std.size()) != c)
    throw std::invalid_argument("normalise_into: image has " + std::to_string(c) + " channels but mean/std have " +
                                std::to_string(mean.size()) + "/" + std::to_string(std.size()));
  float scale[4], bias[4];
  for (int k = 0; k < c; ++k) {
    scale[k] = static_cast<float>(1.0 / (255.0 * std[k]));
    bias[k] = static_cast<float>(-mean[k] / std[k]);
  }
  const size_t plane = static_cast<size_t>(h) * w;
  for (int y = 0; y < h; ++y) {
    const uint8_t* row = image.ptr<uint8_t>(y);
    for (int k = 0; k < c; ++k) {
      float* out = dst + k * plane + static_cast<size_t>(y) * w;
      for (int x = 0; x < w; ++x) out[x] = row[x * c + k] * scale[k] + bias[k];
    }
  }
}

}  // namespace nepa
