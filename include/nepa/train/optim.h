// Parameter groups and the AdamW optimizer built on them. Groups carry names so that a run can print which
// parameter gets which learning rate and weight decay, and so that checkpoints can be checked for a match.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
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

// AdamW with decoupled weight decay, PyTorch's update (torch.optim.AdamW, amsgrad off), run by ATen's fused kernel:
// one `_fused_adamw_` launch per group and step, as torch.optim.AdamW(fused=True) does, where torch::optim::AdamW
// launches ~10 ops per tensor (at ViT-S on CPU 79-94 ms against 16-24 ms; on a GPU ~2,000 launches per step).
// Parameters without a gradient are skipped and get no state, as in PyTorch. The step count of each tensor lives on
// its device (float32, as PyTorch keeps it for the fused kernel) with a host mirror, so nothing waits for the device.
class AdamW {
 public:
  struct ParamState {
    torch::Tensor exp_avg, exp_avg_sq;
    torch::Tensor step;   // float32 scalar on the parameter's device: the kernel's bias correction reads it
    int64_t steps = 0;    // the same count on the host (checkpoints)
  };

  // Every group's parameters must share one device and dtype (one kernel launch each).
  AdamW(const std::vector<ParamGroup>& groups, const OptimConfig& config);

  size_t num_groups() const { return groups_.size(); }
  const std::vector<torch::Tensor>& params(size_t group) const { return groups_.at(group).params; }
  void set_lr(size_t group, double lr) { groups_.at(group).lr = lr; }
  double lr(size_t group) const { return groups_.at(group).lr; }
  void set_weight_decay(size_t group, double weight_decay) { groups_.at(group).weight_decay = weight_decay; }

  // With `found_inf` (a float32 scalar on the parameters' device), the kernel leaves parameters and moments
  // untouched when it is non-zero, as torch.optim's fused path does under a GradScaler: the trainer sets it when
  // the step's loss or gradient norm is not finite, so that nothing waits on the host to decide.
  void step(const torch::Tensor& found_inf = {});
  // Takes the last step() back after found_inf made the kernel skip it: the step counts (device and host) go
  // back and the states it created are dropped, so that the state is again what it was before that step.
  void undo_skipped_step();
  void zero_grad();  // set to none, as PyTorch's default

  // Nothing for a parameter that has not been stepped yet.
  const ParamState* state(size_t group, size_t index) const;
  // Restores one parameter's state (checkpoints); the tensors are copied to the parameter's device and dtype.
  void set_state(size_t group, size_t index, const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq,
                 int64_t steps);
  void clear_state();

 private:
  struct Group {
    std::vector<torch::Tensor> params;
    std::vector<std::unique_ptr<ParamState>> state;  // parallel to params; null until stepped
    double lr = 0.0, weight_decay = 0.0;
  };
  std::vector<Group> groups_;
  double beta1_, beta2_, eps_;
  struct Stepped {
    size_t group, index;
    bool created;
  };
  std::vector<Stepped> last_step_;  // what the last step() touched (undo_skipped_step)
};

std::unique_ptr<AdamW> make_adamw(const std::vector<ParamGroup>& groups, const OptimConfig& config);

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
