#include "nepa/data/seg_transforms.h"

#include <fmt/format.h>
#include <opencv2/core.hpp>
#include <opencv2/imgproc.hpp>

#include <algorithm>
#include <array>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace nepa {

namespace {

// mmseg PhotoMetricDistortion defaults.
constexpr double kBrightnessDelta = 32;
constexpr double kContrastLo = 0.5, kContrastHi = 1.5;
constexpr double kSaturationLo = 0.5, kSaturationHi = 1.5;
// numpy's random.randint(-18, 18) (mmseg imports numpy's random) draws from [-18, 18): 18 itself never comes.
constexpr int kHueDeltaLo = -18, kHueDeltaHi = 17;

std::string size_str(const cv::Mat& m) { return fmt::format("{}x{}", m.cols, m.rows); }

void check_image(const cv::Mat& image, const char* who) {
  if (image.empty()) throw std::invalid_argument(fmt::format("{}: empty image", who));
  if (image.depth() != CV_8U || (image.channels() != 1 && image.channels() != 3))
    throw std::invalid_argument(
        fmt::format("{}: expected a uint8 RGB (3-channel) or grey (1-channel) image, got type {}", who,
                    cv::typeToString(image.type())));
}

void check_labels(const cv::Mat& labels, const char* who) {
  if (labels.empty()) throw std::invalid_argument(fmt::format("{}: empty label map", who));
  if (labels.type() != CV_8UC1)
    throw std::invalid_argument(
        fmt::format("{}: expected a CV_8UC1 label map, got type {}", who, cv::typeToString(labels.type())));
}

void check_pair(const cv::Mat& image, const cv::Mat& labels, const char* who) {
  check_image(image, who);
  check_labels(labels, who);
  if (image.size() != labels.size())
    throw std::invalid_argument(fmt::format("{}: image {} and label map {} (WxH) differ in size", who,
                                            size_str(image), size_str(labels)));
}

void check_options(const SegTrainOptions& o) {
  if (o.scale_long <= 0 || o.scale_short <= 0)
    throw std::invalid_argument(fmt::format("seg_train_view: scale ({}, {}) must be positive", o.scale_long,
                                            o.scale_short));
  if (!(o.ratio_lo > 0) || !(o.ratio_lo <= o.ratio_hi))
    throw std::invalid_argument(
        fmt::format("seg_train_view: ratio range [{}, {}] must satisfy 0 < lo <= hi", o.ratio_lo, o.ratio_hi));
  if (o.crop <= 0) throw std::invalid_argument(fmt::format("seg_train_view: crop {} must be positive", o.crop));
}

cv::Mat hsv_of(const cv::Mat& rgb, const char* who) {
  if (rgb.empty() || rgb.type() != CV_8UC3)
    throw std::invalid_argument(fmt::format("{}: expected a uint8 RGB image", who));
  cv::Mat hsv;
  cv::cvtColor(rgb, hsv, cv::COLOR_RGB2HSV);  // 8-bit: H in [0, 180), S and V in [0, 255]
  return hsv;
}

cv::Mat rgb_of(const cv::Mat& hsv) {
  cv::Mat rgb;
  cv::cvtColor(hsv, rgb, cv::COLOR_HSV2RGB);
  return rgb;
}

}  // namespace

cv::Size rescale_size(int width, int height, int scale_long, int scale_short) {
  if (width <= 0 || height <= 0) throw std::invalid_argument("rescale_size: empty image");
  if (scale_long <= 0 || scale_short <= 0)
    throw std::invalid_argument(fmt::format("rescale_size: scale ({}, {}) must be positive", scale_long, scale_short));
  const double max_long = std::max(scale_long, scale_short), max_short = std::min(scale_long, scale_short);
  const double factor = std::min(max_long / std::max(width, height), max_short / std::min(width, height));
  // mmcv._scale_size: int(w * factor + 0.5) (truncation of a positive value). At least 1 pixel, where mmcv would
  // hand cv2.resize an empty size.
  const int w = std::max(1, static_cast<int>(width * factor + 0.5));
  const int h = std::max(1, static_cast<int>(height * factor + 0.5));
  return {w, h};
}

SegView seg_random_resize(const cv::Mat& image, const cv::Mat& labels, const SegTrainOptions& options,
                          SampleRng& rng) {
  check_pair(image, labels, "seg_random_resize");
  check_options(options);
  const double r = rng.uniform(options.ratio_lo, options.ratio_hi);
  // mmcv RandomResize._random_sample_ratio: the target scale is truncated to ints.
  const int target_long = std::max(1, static_cast<int>(options.scale_long * r));
  const int target_short = std::max(1, static_cast<int>(options.scale_short * r));
  const cv::Size size = rescale_size(image.cols, image.rows, target_long, target_short);
  SegView out;
  cv::resize(image, out.image, size, 0, 0, cv::INTER_LINEAR);
  cv::resize(labels, out.labels, size, 0, 0, cv::INTER_NEAREST);
  return out;
}

cv::Rect seg_crop_box(const cv::Mat& labels, int crop, double cat_max_ratio, int ignore_index, SampleRng& rng) {
  check_labels(labels, "seg_crop_box");
  if (crop <= 0) throw std::invalid_argument(fmt::format("seg_crop_box: crop {} must be positive", crop));
  const int h = labels.rows, w = labels.cols;
  const int crop_h = std::min(crop, h), crop_w = std::min(crop, w);
  auto generate = [&]() {
    // The row offset is drawn before the column offset (mmseg generate_crop_bbox).
    const int offset_h = static_cast<int>(rng.randint(0, std::max(h - crop, 0)));
    const int offset_w = static_cast<int>(rng.randint(0, std::max(w - crop, 0)));
    return cv::Rect(offset_w, offset_h, crop_w, crop_h);
  };
  auto balanced = [&](const cv::Rect& box) {
    std::array<int64_t, 256> count{};
    for (int y = box.y; y < box.y + box.height; ++y) {
      const uint8_t* row = labels.ptr<uint8_t>(y) + box.x;
      for (int x = 0; x < box.width; ++x) ++count[row[x]];
    }
    if (ignore_index >= 0 && ignore_index < 256) count[ignore_index] = 0;
    int classes = 0;
    int64_t max_count = 0, total = 0;
    for (const int64_t c : count) {
      if (c == 0) continue;
      ++classes;
      max_count = std::max(max_count, c);
      total += c;
    }
    return classes > 1 && static_cast<double>(max_count) / static_cast<double>(total) < cat_max_ratio;
  };
  cv::Rect box = generate();
  if (cat_max_ratio < 1.0) {
    for (int attempt = 0; attempt < 10; ++attempt) {
      if (balanced(box)) break;
      box = generate();
    }
  }
  return box;
}

cv::Mat photometric_convert(const cv::Mat& image, double alpha, double beta) {
  if (image.empty() || image.depth() != CV_8U)
    throw std::invalid_argument("photometric_convert: expected a non-empty uint8 image");
  // numpy: img.astype(float32) * alpha + beta with Python-float alpha/beta taken as float32, np.clip(0, 255),
  // astype(uint8) (truncation).
  const float a = static_cast<float>(alpha), b = static_cast<float>(beta);
  cv::Mat out(image.size(), image.type());
  const int n = image.cols * image.channels();
  for (int y = 0; y < image.rows; ++y) {
    const uint8_t* src = image.ptr<uint8_t>(y);
    uint8_t* dst = out.ptr<uint8_t>(y);
    for (int i = 0; i < n; ++i) {
      float v = static_cast<float>(src[i]) * a;
      v = v + b;
      v = std::min(255.0f, std::max(0.0f, v));
      dst[i] = static_cast<uint8_t>(v);
    }
  }
  return out;
}

cv::Mat adjust_saturation(const cv::Mat& rgb, double alpha) {
  cv::Mat hsv = hsv_of(rgb, "adjust_saturation");
  std::vector<cv::Mat> ch;
  cv::split(hsv, ch);
  ch[1] = photometric_convert(ch[1], alpha, 0.0);
  cv::merge(ch, hsv);
  return rgb_of(hsv);
}

cv::Mat shift_hue(const cv::Mat& rgb, int delta) {
  cv::Mat hsv = hsv_of(rgb, "shift_hue");
  for (int y = 0; y < hsv.rows; ++y) {
    uint8_t* p = hsv.ptr<uint8_t>(y);
    for (int x = 0; x < hsv.cols; ++x) {
      int hue = (static_cast<int>(p[3 * x]) + delta) % 180;
      if (hue < 0) hue += 180;  // Python's % takes the divisor's sign
      p[3 * x] = static_cast<uint8_t>(hue);
    }
  }
  return rgb_of(hsv);
}

cv::Mat photometric_distortion(const cv::Mat& image, SampleRng& rng) {
  check_image(image, "photometric_distortion");
  const bool colour = image.channels() == 3;
  auto contrast = [&rng](const cv::Mat& img) {
    if (rng.randint(0, 1)) return photometric_convert(img, rng.uniform(kContrastLo, kContrastHi), 0.0);
    return img;
  };
  cv::Mat img = image.clone();
  if (rng.randint(0, 1)) img = photometric_convert(img, 1.0, rng.uniform(-kBrightnessDelta, kBrightnessDelta));
  const int64_t mode = rng.randint(0, 1);
  if (mode == 1) img = contrast(img);
  if (colour) {
    if (rng.randint(0, 1)) img = adjust_saturation(img, rng.uniform(kSaturationLo, kSaturationHi));
    if (rng.randint(0, 1)) img = shift_hue(img, static_cast<int>(rng.randint(kHueDeltaLo, kHueDeltaHi)));
  }
  if (mode == 0) img = contrast(img);
  return img;
}

SegView seg_train_view(const cv::Mat& image, const cv::Mat& labels, const SegTrainOptions& options, SampleRng& rng) {
  check_pair(image, labels, "seg_train_view");
  check_options(options);
  const SegView resized = seg_random_resize(image, labels, options, rng);
  const cv::Rect box = seg_crop_box(resized.labels, options.crop, options.cat_max_ratio, options.ignore_index, rng);
  SegView out{resized.image(box).clone(), resized.labels(box).clone()};
  if (rng.uniform() < options.flip_prob) {
    cv::flip(out.image, out.image, 1);
    cv::flip(out.labels, out.labels, 1);
  }
  if (options.photometric) out.image = photometric_distortion(out.image, rng);
  return out;
}

cv::Mat pad_labels(const cv::Mat& labels, int crop, int ignore_index) {
  check_labels(labels, "pad_labels");
  if (crop <= 0) throw std::invalid_argument(fmt::format("pad_labels: crop {} must be positive", crop));
  if (ignore_index < 0 || ignore_index > 255)
    throw std::invalid_argument(fmt::format("pad_labels: ignore index {} does not fit uint8", ignore_index));
  cv::Mat out;
  cv::copyMakeBorder(labels, out, 0, std::max(0, crop - labels.rows), 0, std::max(0, crop - labels.cols),
                     cv::BORDER_CONSTANT, cv::Scalar::all(ignore_index));
  return out;
}

cv::Mat seg_eval_resize(const cv::Mat& image, int scale_long, int scale_short) {
  check_image(image, "seg_eval_resize");
  const cv::Size size = rescale_size(image.cols, image.rows, scale_long, scale_short);
  cv::Mat out;
  cv::resize(image, out, size, 0, 0, cv::INTER_LINEAR);
  return out;
}

}  // namespace nepa
