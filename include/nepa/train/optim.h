// Parameter groups and the AdamW optimizer built on them. Groups carry names so that a run can print which
// parameter gets which learning rate and weight decay, and so that checkpoints can be checked for a match.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/adamw.h>

#include <memory>
#include <string>
#include <vector>

#include "nepa/config/config.h"

namespace nepa {

struct ParamGroup {
  std::string name;                      // "decay", "no_decay", "blocks.3", ...
  std::vector<std::string> param_names;  // parallel to params
  std::vector<torch::Tensor> params;
  double weight_decay = 0.0;
  double lr_scale = 1.0;  // multiplies the schedule's lr
};

// NEPA-SPEC §3: weight decay on every parameter with >= 2 dimensions (weight matrices, conv kernels, the CLS
// token, mask token and absolute position table); none on biases, LayerNorm / QK-Norm weights and LayerScale,
// which are all 1-D. Parameters with requires_grad false are left out. Empty groups are dropped.
std::vector<ParamGroup> decay_groups(const torch::nn::Module& module, double weight_decay);

// AdamW over `groups` (lr set per step by the training loop; betas/eps from the config).
std::unique_ptr<torch::optim::AdamW> make_adamw(const std::vector<ParamGroup>& groups, const OptimConfig& config);

// torch.nn.utils.clip_grad_norm_ with the L2 norm, as its foreach path computes it: total = || (||g_i||)_i ||
// over the gradients of `params` (those without one are skipped), then every gradient times
// min(1, max_norm / (total + 1e-6)). max_norm <= 0 only measures. Returns the pre-clip total as a float32 scalar
// tensor on the gradients' device: nothing here waits for the device.
torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm);
// "gradient clipping: global L2 norm <= 1 ..." or "... off": for the start of a run and --dry-run.
std::string describe_clipping(const OptimConfig& config);

// A table, one line per group: name, tensors, parameters, weight decay, lr scale.
std::string describe_groups(const std::vector<ParamGroup>& groups);

}  // namespace nepa
