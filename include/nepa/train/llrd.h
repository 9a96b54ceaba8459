// Layer-wise learning-rate decay for fine-tuning (NEPA-SPEC §4). Parameters of the classifier are grouped by
// depth: block i (0-based, of L) gets factor llrd^(L-1-i), the embeddings llrd^L, so the first layers move least;
// the classifier and the backbone's final layernorm run at finetune.head_lr (factor 1); fc_norm and anything
// else at the base lr (factor 1). Weight decay goes to parameters with >= 2 dimensions only.
//
// Two schedules, as the release's schedulers.py:
//  - llrd_cosine_warmup: group g warms up for max(1, W - round(W * min(factor_g, 1))) steps (the more decayed,
//    the longer; Python's round, half to even), then follows a cosine from its peak to schedule.min_lr;
//    W = ceil(warmup_fraction * steps) as the HF Trainer computes it, and W = 0 means no warmup at all.
//  - llrd_cosine: a common warmup of W steps and cosine; with finetune.llrd_end set, llrd itself moves from
//    finetune.llrd to llrd_end, otherwise it stays fixed.
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/train/optim.h"
#include "nepa/train/schedule.h"

namespace nepa {

// How a group's lr is formed: depth >= 0 -> base lr x llrd^depth; head -> head_lr; otherwise the base lr.
struct LlrdSpec {
  int depth = -1;
  bool head = false;
  std::string pattern;  // the parameter names it covers, for the table
};

struct LlrdGroups {
  std::vector<ParamGroup> groups;  // lr_scale 1: the schedule gives each group its whole lr
  std::vector<LlrdSpec> specs;     // parallel to groups
};

// Where a parameter goes: groups sort by `order`; `name` names the group (".no_wd" is added for its parameters of
// fewer than 2 dimensions, which get no weight decay).
struct GroupKey {
  int order = 0;
  std::string name;
  LlrdSpec spec;
};
LlrdGroups group_parameters(const std::vector<std::pair<std::string, torch::Tensor>>& named_params,
                            double weight_decay, const std::function<GroupKey(const std::string&)>& key_of);

// Groups for the named parameters of a ViTNepaForImageClassification with `num_blocks` blocks (names
// vit_nepa.embeddings.*, vit_nepa.encoder.layer.<i>.*, vit_nepa.layernorm.*, fc_norm.*, classifier.*).
// Frozen parameters (requires_grad false) are left out.
LlrdGroups llrd_groups(const std::vector<std::pair<std::string, torch::Tensor>>& named_params, int num_blocks,
                       double weight_decay);

class LlrdSchedule : public LrSchedule {
 public:
  LlrdSchedule(std::string kind, std::vector<LlrdSpec> specs, double base_lr, double head_lr, double llrd,
               std::optional<double> llrd_end, double min_lr, int64_t warmup_steps, int64_t total_steps);
  double lr(int group, int64_t step) const override;
  // The decay factor of a group at `step` (llrd^depth, 1 for head and base groups).
  double factor(int group, int64_t step) const;
  int64_t warmup_steps(int group) const;
  double peak(int group) const;  // at step 0's llrd

 private:
  std::string kind_;
  std::vector<LlrdSpec> specs_;
  double base_, head_, llrd_;
  std::optional<double> llrd_end_;
  double min_lr_;
  int64_t warmup_, total_;
};

std::unique_ptr<LlrdSchedule> make_llrd_schedule(const Config& config, const std::vector<LlrdSpec>& specs,
                                                 int64_t total_steps);

// One line per group: name, the parameter names it covers, tensors, factor, peak lr, warmup, weight decay.
std::string describe_llrd(const LlrdGroups& groups, const LlrdSchedule& schedule);

}  // namespace nepa
