// Image transforms on uint8 OpenCV images, with the sampling rules of torchvision so that a recipe written
// for the official code means the same here. Randomness comes only from the SampleRng passed in.
#pragma once

#include <opencv2/core/mat.hpp>

#include <cstdint>
#include <string>
#include <vector>

#include "nepa/config/config.h"

namespace nepa {

// splitmix64-seeded xoshiro256** : small, fast, identical on every platform (std distributions are not).
class SampleRng {
 public:
  explicit SampleRng(uint64_t seed);
  // The generator of one sample: a hash of (seed, epoch, index), so augmentation does not depend on which
  // thread loads the sample or in which order.
  static SampleRng for_sample(uint64_t seed, int64_t epoch, int64_t index);
  uint64_t next();
  double uniform();                     // [0, 1)
  double uniform(double lo, double hi);  // [lo, hi)
  int64_t randint(int64_t lo, int64_t hi);  // [lo, hi] inclusive, as torch.randint(lo, hi + 1)

 private:
  uint64_t s_[4];
};

struct CropBox {
  int x = 0, y = 0, w = 0, h = 0;  // top-left corner and size, in source pixels
  bool operator==(const CropBox& o) const { return x == o.x && y == o.y && w == o.w && h == o.h; }
};

// torchvision RandomResizedCrop.get_params: up to 10 tries of area ~ U(scale) * H*W and log-ratio ~
// U(log ratio); the first box that fits wins; otherwise the centre crop with the ratio clamped to the range.
CropBox random_resized_crop_box(int width, int height, const std::vector<double>& scale,
                                const std::vector<double>& ratio, SampleRng& rng);

// cv::INTER_* for "bilinear" | "bicubic" | "nearest" | "area".
int interpolation_flag(const std::string& name);

// Training view: RandomResizedCrop to size x size, horizontal flip with probability hflip_prob, then
// RandAugment (data.auto_augment) or colour jitter (data.color_jitter) when configured (randaugment.h).
cv::Mat train_transform(const cv::Mat& image, const DataConfig& config, SampleRng& rng);

// Evaluation view: resize the shorter side to round(size / eval_crop_pct), then centre crop size x size.
cv::Mat eval_transform(const cv::Mat& image, const DataConfig& config);

// Writes (x / 255 - mean[c]) / std[c] for a HxWxC uint8 image into `dst` laid out [C, H, W] (float32).
void normalise_into(const cv::Mat& image, const std::vector<double>& mean, const std::vector<double>& std, float* dst);

}  // namespace nepa
