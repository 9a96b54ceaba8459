#include "nepa/train/seg_schedule.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace nepa {

namespace {

// BEiT's layer id of a NepaSegmenter parameter.
int layer_id(const std::string& name, int num_blocks) {
  static const std::string blocks = "vit_nepa.encoder.layer.";
  if (name.rfind("vit_nepa.embeddings.", 0) == 0) return 0;
  if (name.rfind(blocks, 0) == 0) return std::stoi(name.substr(blocks.size())) + 1;
  return num_blocks + 1;
}

}  // namespace

LlrdGroups seg_param_groups(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, int num_blocks,
                            double weight_decay) {
  return group_parameters(named_params, weight_decay, [num_blocks](const std::string& name) {
    const int id = layer_id(name, num_blocks);
    GroupKey key;
    key.order = id;
    key.name = id == 0 ? "embeddings" : id <= num_blocks ? "block." + std::to_string(id - 1) : "heads";
    key.spec.depth = num_blocks + 1 - id;
    key.spec.pattern = id == 0            ? "vit_nepa.embeddings.*"
                       : id <= num_blocks ? "vit_nepa.encoder.layer." + std::to_string(id - 1) + ".*"
                                          : "backbone.fpn*, decode_head, auxiliary_head";
    return key;
  });
}

PolyWarmupSchedule::PolyWarmupSchedule(std::vector<LlrdSpec> specs, double lr, double decay, int64_t warmup_steps,
                                       double warmup_ratio, int64_t total_steps, double power, double min_lr)
    : specs_(std::move(specs)), lr_(lr), decay_(decay), warmup_(std::max<int64_t>(warmup_steps, 0)),
      total_(std::max<int64_t>(total_steps, 1)), warmup_ratio_(warmup_ratio), power_(power), min_lr_(min_lr) {
  if (warmup_ratio < 0 || warmup_ratio > 1)
    throw std::invalid_argument("PolyWarmupSchedule: warmup_ratio must be in [0, 1]");
}

double PolyWarmupSchedule::factor(int group) const {
  return std::pow(decay_, specs_.at(static_cast<size_t>(group)).depth);
}

double PolyWarmupSchedule::peak(int group) const { return lr_ * factor(group); }

std::string PolyWarmupSchedule::summary() const {
  return fmt::format("linear warmup over {} steps from {:g} of each group's lr, then poly (power {:g}) to {:g}",
                     warmup_, warmup_ratio_, power_, min_lr_);
}

std::string describe_seg_groups(const LlrdGroups& g, const PolyWarmupSchedule& schedule) {
  std::string out = fmt::format("{:<17} {:<72} {:>7} {:>10} {:>10} {:>6}\n", "group", "parameters", "tensors",
                                "factor", "peak lr", "wd");
  for (size_t i = 0; i < g.groups.size(); ++i) {
    const int gi = static_cast<int>(i);
    out += fmt::format("{:<17} {:<72} {:>7} {:>10.4g} {:>10.4g} {:>6.3g}\n", g.groups[i].name,
                       g.specs[i].pattern + (g.groups[i].weight_decay > 0 ? "" : " (<=1-D)"), g.groups[i].params.size(),
                       schedule.factor(gi), schedule.peak(gi), g.groups[i].weight_decay);
  }
  return out;
}

double PolyWarmupSchedule::lr(int group, int64_t step) const {
  const double base = peak(group);
  const double progress = std::min(static_cast<double>(step) / static_cast<double>(total_), 1.0);
  const double poly = (base - min_lr_) * std::pow(1.0 - progress, power_) + min_lr_;
  if (step >= warmup_) return poly;
  const double k = (1.0 - static_cast<double>(step) / static_cast<double>(warmup_)) * (1.0 - warmup_ratio_);
  return poly * (1.0 - k);
}

}  // namespace nepa
