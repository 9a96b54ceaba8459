// Fine-tuning augmentations with the semantics of timm's create_transform, which the official recipe calls
// (NEPA-SPEC §4): RandAugment ("rand-m9-mstd0.5-inc1"), colour jitter (only without RandAugment) and random
// erasing. They run on the uint8 crop (RandAugment, jitter) and on the normalised CHW floats (erasing), and take
// every draw from the sample's own generator, so a batch does not depend on threads.
//
// Pixel operations follow PIL's (ImageOps / ImageEnhance) formulas; geometric ones use OpenCV's warpAffine with
// the configured interpolation, whose bicubic kernel differs slightly from PIL's.
#pragma once

#include <opencv2/core/mat.hpp>

#include <string>
#include <vector>

#include "nepa/data/transforms.h"

namespace nepa {

// The operations of timm's "increasing" RandAugment set (inc1), in timm's order.
enum class AugOp {
  kAutoContrast, kEqualize, kInvert, kRotate, kPosterizeIncreasing, kSolarizeIncreasing, kSolarizeAdd,
  kColorIncreasing, kContrastIncreasing, kBrightnessIncreasing, kSharpnessIncreasing, kShearX, kShearY,
  kTranslateXRel, kTranslateYRel
};
const char* aug_op_name(AugOp op);

// "rand-m9-mstd0.5-inc1" and its variants: m (magnitude 0-10), n (ops per image, default 2), mstd (std of the
// per-op magnitude noise; inf = uniform in [0, m]), mmax (magnitude cap, default 10), p (probability of each op,
// default 0.5), inc (1 = the increasing set; 0 is not offered). Throws std::invalid_argument naming the part.
struct RandAugmentSpec {
  double magnitude = 9, magnitude_std = 0.5, magnitude_max = 10, prob = 0.5;
  int num_ops = 2;
  static RandAugmentSpec parse(const std::string& text);
};

struct AugParams {
  cv::Scalar fill = cv::Scalar(128, 128, 128);  // timm: round(255 * mean) per channel
  int interpolation = 2;                        // cv::INTER_CUBIC
  double translate_pct = 0.45;
};

// One op at `magnitude` (0-10, after noise), with timm's level-to-argument mapping and random sign.
cv::Mat apply_aug_op(const cv::Mat& image, AugOp op, double magnitude, const AugParams& params, SampleRng& rng);

// timm RandAugment: num_ops ops drawn with replacement, each applied with probability prob at a magnitude drawn
// from N(m, mstd) clipped to [0, mmax].
cv::Mat rand_augment(const cv::Mat& image, const RandAugmentSpec& spec, const AugParams& params, SampleRng& rng);

// torchvision ColorJitter(b, c, s) (hue 0): the three factors in a random order, each uniform in [1-x, 1+x].
cv::Mat color_jitter(const cv::Mat& image, double strength, SampleRng& rng);

// timm RandomErasing(probability, mode 'pixel', count 1) on a normalised [C, H, W] float image: with
// probability `prob`, up to 10 tries of area U(0.02, 1/3) x HW and log-uniform aspect in [0.3, 1/0.3]; the first
// box that fits is filled with N(0, 1) noise per pixel and channel. Returns whether a box was erased.
bool random_erase(float* chw, int channels, int height, int width, double prob, SampleRng& rng);

}  // namespace nepa
