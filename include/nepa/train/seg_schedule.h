// The optimiser groups and lr schedule of the BEiT/MAE ADE20K recipe (mmseg's LayerDecayOptimizerConstructor and
// poly schedule with linear warmup), for NepaSegmenter. The NEPA paper does not publish its segmentation
// hyperparameters; these are MAE's published ADE20K recipe.
//
// Layer ids are BEiT's, not the fine-tuning ones of llrd.h: the embeddings are id 0, block i is id i + 1, and
// everything after the blocks (the final layernorm, the pyramid, both heads) is id L + 1; a group's lr is
// lr x decay^(L + 1 - id), so the heads train at the full lr and the embeddings at decay^(L + 1). Weight decay goes to
// parameters with two or more dimensions (mmseg exempts 1-D parameters and biases; its name test for
// pos_embed/cls_token never matches a prefixed name, so the CLS token does decay there too).
#pragma once

#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

#include "nepa/train/llrd.h"
#include "nepa/train/schedule.h"

namespace nepa {

// Groups for a NepaSegmenter's named parameters (vit_nepa.embeddings.*, vit_nepa.encoder.layer.<i>.*, the rest);
// LlrdSpec::depth holds the exponent L + 1 - id. Frozen parameters are left out.
LlrdGroups seg_param_groups(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, int num_blocks,
                            double weight_decay);

// mmcv's poly schedule with linear warmup (by iteration): poly(t) = (base - min_lr) (1 - t / T)^power + min_lr
// over the whole run, and during the first W iterations poly(t) x (1 - (1 - t / W)(1 - warmup_ratio)), i.e. from
// warmup_ratio x poly up to poly. Each group's base is lr x decay^depth.
class PolyWarmupSchedule : public LrSchedule {
 public:
  PolyWarmupSchedule(std::vector<LlrdSpec> specs, double lr, double decay, int64_t warmup_steps, double warmup_ratio,
                     int64_t total_steps, double power = 1.0, double min_lr = 0.0);
  double lr(int group, int64_t step) const override;
  std::string summary() const override;
  double peak(int group) const;
  double factor(int group) const;  // decay^depth

 private:
  std::vector<LlrdSpec> specs_;
  double lr_, decay_;
  int64_t warmup_, total_;
  double warmup_ratio_, power_, min_lr_;
};

// One line per group: name, the parameter names it covers, tensors, factor, peak lr, weight decay.
std::string describe_seg_groups(const LlrdGroups& groups, const PolyWarmupSchedule& schedule);

}  // namespace nepa
