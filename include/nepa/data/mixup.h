// Label mixing for fine-tuning with the semantics of timm's Mixup in batch mode (the official recipe calls it):
// one draw per batch decides whether the batch is mixed (mixup_prob), whether by CutMix or Mixup (switch_prob),
// and lambda ~ Beta(alpha, alpha). Each image is mixed with the image at the mirrored position of the batch
// (batch.flip(0)); CutMix pastes a box whose side is sqrt(1 - lambda) of the image's, centred uniformly, clipped
// at the borders, and lambda is then corrected to the area actually kept. Targets are label-smoothed one-hots
// mixed with the same lambda. Draws come from a generator seeded per batch, so a batch is reproducible.
#pragma once

#include <torch/types.h>

#include "nepa/config/config.h"
#include "nepa/data/transforms.h"

namespace nepa {

struct MixParams {
  bool mixed = false;   // false: lambda 1, images untouched
  bool cutmix = false;
  double lambda = 1.0;  // weight of each image's own label (after the CutMix correction)
  int y0 = 0, y1 = 0, x0 = 0, x1 = 0;  // CutMix box rows [y0, y1), columns [x0, x1)
};

// Beta(alpha, alpha) from two Gamma draws (Marsaglia-Tsang), on `rng`.
double sample_beta(double alpha, SampleRng& rng);

// timm's rand_bbox + correction for an H x W image: the box and 1 - box area / (H W).
MixParams cutmix_box(int height, int width, double lambda, SampleRng& rng);

// Draws the batch's mixing (NEPA-SPEC §4 defaults: mixup 0.8, cutmix 1.0, prob 1, switch 0.5).
MixParams draw_mix(const FinetuneConfig& config, int height, int width, SampleRng& rng);

// Smoothed one-hot targets [B, C]: 1 - s + s/C on the label, s/C elsewhere.
torch::Tensor smooth_one_hot(const torch::Tensor& labels, int64_t num_classes, double smoothing);

// Applies `mix` to `images` [B, C, H, W] in place and returns the soft targets [B, num_classes] (float32).
// Throws for an odd batch when mixing (as timm does: images pair with their mirror).
torch::Tensor apply_mix(torch::Tensor& images, const torch::Tensor& labels, int64_t num_classes, double smoothing,
                        const MixParams& mix);

// Mean over the batch of -sum(target * log_softmax(logits)) (timm's SoftTargetCrossEntropy; with smoothed,
// unmixed targets it equals label-smoothing cross entropy).
torch::Tensor soft_target_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets);

}  // namespace nepa
