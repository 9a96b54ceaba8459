#include "nepa/train/llrd.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <stdexcept>

namespace nepa {

namespace {

double half_cosine(double progress) { return 0.5 * (1.0 + std::cos(M_PI * std::clamp(progress, 0.0, 1.0))); }

// The layer bucket of a parameter: its spec and a sort key (embeddings first, head last).
std::pair<LlrdSpec, int> bucket_of(const std::string& name, int num_blocks) {
  static const std::string layer = "vit_nepa.encoder.layer.";
  if (name.rfind("vit_nepa.embeddings.", 0) == 0) return {{num_blocks, false, "vit_nepa.embeddings.*"}, 0};
  if (name.rfind(layer, 0) == 0) {
    const int i = std::stoi(name.substr(layer.size()));
    if (i < 0 || i >= num_blocks) throw std::invalid_argument("llrd: block index out of range in " + name);
    return {{num_blocks - 1 - i, false, layer + std::to_string(i) + ".*"}, 1 + i};
  }
  if (name.rfind("classifier.", 0) == 0 || name.rfind("vit_nepa.layernorm.", 0) == 0)
    return {{-1, true, "classifier.*, vit_nepa.layernorm.*"}, num_blocks + 2};
  return {{-1, false, "fc_norm.*, other"}, num_blocks + 1};
}

}  // namespace

LlrdGroups group_parameters(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                            double weight_decay, const std::function<GroupKey(const std::string&)>& key_of) {
  std::map<std::pair<int, int>, std::pair<ParamGroup, LlrdSpec>> buckets;  // (order, no decay?) -> group
  for (const auto& [name, p] : named_params) {
    if (!p.requires_grad()) continue;
    const GroupKey key = key_of(name);
    const bool decay = p.dim() >= 2;
    auto& entry = buckets[{key.order, decay ? 0 : 1}];
    if (entry.first.params.empty()) {
      entry.first.name = key.name + (decay ? "" : ".no_wd");
      entry.first.weight_decay = decay ? weight_decay : 0.0;
      entry.second = key.spec;
    }
    entry.first.param_names.push_back(name);
    entry.first.params.push_back(p);
  }
  LlrdGroups out;
  for (auto& [k, v] : buckets) {
    out.groups.push_back(std::move(v.first));
    out.specs.push_back(v.second);
  }
  return out;
}

LlrdGroups llrd_groups(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, int num_blocks,
                       double weight_decay) {
  return group_parameters(named_params, weight_decay, [num_blocks](const std::string& name) {
    auto [spec, key] = bucket_of(name, num_blocks);
    const std::string base = spec.head ? "head" : spec.depth == num_blocks ? "embeddings"
                             : spec.depth >= 0                          ? "block." + std::to_string(key - 1)
                                                                        : "fc_norm";
    return GroupKey{key, base, spec};
  });
}

LlrdSchedule::LlrdSchedule(std::string kind, std::vector<LlrdSpec> specs, double base_lr, double head_lr,
                           double llrd, std::optional<double> llrd_end, double min_lr, int64_t warmup_steps,
                           int64_t total_steps)
    : kind_(std::move(kind)), specs_(std::move(specs)), base_(base_lr), head_(head_lr), llrd_(llrd),
      llrd_end_(llrd_end), min_lr_(min_lr), warmup_(warmup_steps), total_(std::max<int64_t>(total_steps, 1)) {
  if (kind_ != "llrd_cosine_warmup" && kind_ != "llrd_cosine")
    throw std::invalid_argument("LlrdSchedule: unknown kind " + kind_);
}

double LlrdSchedule::factor(int group, int64_t step) const {
  const LlrdSpec& s = specs_.at(static_cast<size_t>(group));
  if (s.depth < 0) return 1.0;
  double llrd = llrd_;
  // The release moves llrd along a half-cosine, 0.5 * (1 - cos(pi * step / total)) of the way from llrd to
  // llrd_end (the paper's text says linear; its best B recipe, 0.35 -> 1.0, ran this code).
  if (kind_ == "llrd_cosine" && llrd_end_)
    llrd = *llrd_end_ + (llrd_ - *llrd_end_) * half_cosine(static_cast<double>(step) / static_cast<double>(total_));
  return std::pow(llrd, s.depth);
}

int64_t LlrdSchedule::warmup_steps(int group) const {
  if (kind_ == "llrd_cosine" || warmup_ == 0) return warmup_;
  const double f = std::min(factor(group, 0), 1.0);
  // nearbyint: Python's round() (half to even) under the default rounding mode.
  const auto shorter = static_cast<int64_t>(std::nearbyint(static_cast<double>(warmup_) * f));
  return std::clamp<int64_t>(warmup_ - shorter, 1, total_);
}

double LlrdSchedule::peak(int group) const {
  return specs_.at(static_cast<size_t>(group)).head ? head_ : base_ * factor(group, 0);
}

double LlrdSchedule::lr(int group, int64_t step) const {
  const LlrdSpec& s = specs_.at(static_cast<size_t>(group));
  const double peak = s.head ? head_ : base_ * factor(group, step);
  const int64_t w = warmup_steps(group);
  if (step < w) return peak * static_cast<double>(step) / static_cast<double>(w);
  const double progress = static_cast<double>(step - w) / static_cast<double>(std::max<int64_t>(total_ - w, 1));
  return min_lr_ + (peak - min_lr_) * half_cosine(progress);
}

std::unique_ptr<LlrdSchedule> make_llrd_schedule(const Config& config, const std::vector<LlrdSpec>& specs,
                                                 int64_t total_steps) {
  const auto warmup = static_cast<int64_t>(std::ceil(config.schedule.warmup_fraction * static_cast<double>(total_steps)));
  return std::make_unique<LlrdSchedule>(config.schedule.name, specs, scaled_lr(config.optim, config.train.total_batch),
                                        config.finetune.head_lr, config.finetune.llrd, config.finetune.llrd_end,
                                        config.schedule.min_lr, warmup, total_steps);
}

std::string describe_llrd(const LlrdGroups& g, const LlrdSchedule& schedule) {
  std::string out = fmt::format("{:<16} {:<36} {:>7} {:>10} {:>10} {:>7} {:>6}\n", "group", "parameters", "tensors",
                                "factor", "peak lr", "warmup", "wd");
  for (size_t i = 0; i < g.groups.size(); ++i) {
    const int gi = static_cast<int>(i);
    out += fmt::format("{:<16} {:<36} {:>7} {:>10.4g} {:>10.4g} {:>7} {:>6.3g}\n", g.groups[i].name,
                       g.specs[i].pattern + (g.groups[i].weight_decay > 0 ? "" : " (<=1-D)"), g.groups[i].params.size(),
                       schedule.factor(gi, 0), schedule.peak(gi), schedule.warmup_steps(gi),
                       g.groups[i].weight_decay);
  }
  return out;
}

}  // namespace nepa
