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

// cv::INTER_* for "bilinear" | "bicubic" | "nearest" | "area" (RandAugment's warps; resize_image for resizing).
int interpolation_flag(const std::string& name);

// Resizes a uint8 image (1-4 channels; an ROI view is fine) to width x height. bilinear and bicubic run ATen's
// antialiased separable filter on uint8 (_upsample_{bilinear,bicubic}2d_aa, the kernel torchvision's
// resize(antialias=True) uses for uint8 tensors, modelled on Pillow-SIMD): when shrinking, the filter support
// widens with the reduction factor as PIL's does, and bicubic is PIL's (a = -0.5), so a view equals torchvision's
// on uint8 tensors and is within a grey level of torchvision's on PIL images (the release's pipeline). OpenCV's
// bilinear/bicubic do neither (aliasing when shrinking, a = -0.75). nearest and area are OpenCV's.
cv::Mat resize_image(const cv::Mat& image, int width, int height, const std::string& interpolation);

// Training view: RandomResizedCrop to size x size, horizontal flip with probability hflip_prob, then
// RandAugment (data.auto_augment) or colour jitter (data.color_jitter) when configured (randaugment.h).
cv::Mat train_transform(const cv::Mat& image, const DataConfig& config, SampleRng& rng);

// Evaluation view, as the release's: resize to s = int(size / eval_crop_pct) (truncated, as Python's int() and
// timm: 224 / 0.95 -> 235), either the shorter side to s keeping the aspect (eval_resize shorter_side,
// torchvision Resize(s)) or to s x s (square, Resize((s, s))), then centre crop size x size.
cv::Mat eval_transform(const cv::Mat& image, const DataConfig& config);

// One line saying what eval_transform does with this config, for logs and --dry-run.
std::string describe_eval_view(const DataConfig& config);

// Writes (x / 255 - mean[c]) / std[c] for a HxWxC uint8 image into `dst` laid out [C, H, W] (float32).
void normalise_into(const cv::Mat& image, const std::vector<double>& mean, const std::vector<double>& std, float* dst);

}  // namespace nepa
