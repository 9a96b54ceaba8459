#include "nepa/train/optim.h"

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
#include <ATen/ops/_fused_adamw.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <map>

namespace nepa {

std::vector<ParamGroup> decay_groups(const torch::nn::Module& module, double weight_decay) {
  ParamGroup decay{"decay", {}, {}, weight_decay, 1.0};
  ParamGroup no_decay{"no_decay", {}, {}, 0.0, 1.0};
  for (const auto& item : module.named_parameters(/*recurse=*/true)) {
    if (!item.value().requires_grad()) continue;
    ParamGroup& g = item.value().dim() >= 2 ? decay : no_decay;
    g.param_names.push_back(item.key());
    g.params.push_back(item.value());
  }
  std::vector<ParamGroup> groups;
  for (auto* g : {&decay, &no_decay})
    if (!g->params.empty()) groups.push_back(std::move(*g));
  return groups;
}

AdamW::AdamW(const std::vector<ParamGroup>& groups, const OptimConfig& config)
    : beta1_(config.betas.at(0)), beta2_(config.betas.at(1)), eps_(config.eps) {
  for (const auto& g : groups) {
    Group group;
    group.weight_decay = g.weight_decay;
    for (size_t i = 0; i < g.params.size(); ++i) {
      const torch::Tensor& p = g.params[i];
      const torch::Tensor& first = g.params.front();
      if (!p.is_floating_point() || p.device() != first.device() || p.scalar_type() != first.scalar_type())
        throw std::invalid_argument(fmt::format(
            "AdamW: group '{}' mixes devices or dtypes ({} is {} on {}, {} on {}): one fused launch needs one of each",
            g.name, g.param_names.at(i), c10::toString(p.scalar_type()), p.device().str(),
            c10::toString(first.scalar_type()), first.device().str()));
    }
    group.params = g.params;
    group.state.resize(g.params.size());
    groups_.push_back(std::move(group));
  }
}

void AdamW::step(const torch::Tensor& found_inf) {
  torch::NoGradGuard no_grad;
  last_step_.clear();
  for (size_t gi = 0; gi < groups_.size(); ++gi) {
    Group& g = groups_[gi];
    std::vector<torch::Tensor> params, grads, exp_avgs, exp_avg_sqs, steps;
    for (size_t i = 0; i < g.params.size(); ++i) {
      const torch::Tensor& p = g.params[i];
      if (!p.grad().defined()) continue;
      const bool created = !g.state[i];
      if (created) set_state(gi, i, torch::zeros_like(p), torch::zeros_like(p), 0);
      last_step_.push_back({gi, i, created});
      ParamState& s = *g.state[i];
      ++s.steps;
      params.push_back(p);
      grads.push_back(p.grad());
      exp_avgs.push_back(s.exp_avg);
      exp_avg_sqs.push_back(s.exp_avg_sq);
      steps.push_back(s.step);
    }
    if (params.empty()) continue;
    // As torch.optim.AdamW(fused=True): the counts advance before the kernel, which reads them for the bias
    // correction; weight decay is decoupled (p *= 1 - lr * wd) inside the kernel.
    at::_foreach_add_(steps, 1);
    at::_fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, /*max_exp_avg_sqs=*/{}, steps, g.lr, beta1_, beta2_,
                      g.weight_decay, eps_, /*amsgrad=*/false, /*maximize=*/false, /*grad_scale=*/{},
                      found_inf.defined() ? std::optional<torch::Tensor>(found_inf) : std::nullopt);
  }
}

void AdamW::undo_skipped_step() {
  torch::NoGradGuard no_grad;
  for (const Stepped& s : last_step_) {
    auto& state = groups_[s.group].state[s.index];
    if (s.created) {
      state.reset();
    } else {
      --state->steps;
      state->step.fill_(static_cast<double>(state->steps));
    }
  }
  last_step_.clear();
}

void AdamW::zero_grad() {
  for (auto& g : groups_)
    for (auto& p : g.params)
      if (p.grad().defined()) p.mutable_grad().reset();
}

const AdamW::ParamState* AdamW::state(size_t group, size_t index) const {
  return groups_.at(group).state.at(index).get();
}

void AdamW::set_state(size_t group, size_t index, const torch::Tensor& exp_avg, const torch::Tensor& exp_avg_sq,
                      int64_t steps) {
  const torch::Tensor& p = groups_.at(group).params.at(index);
  auto s = std::make_unique<ParamState>();
  s->exp_avg = exp_avg.to(p.options(), /*non_blocking=*/false, /*copy=*/true).contiguous();
  s->exp_avg_sq = exp_avg_sq.to(p.options(), false, true).contiguous();
  s->step = torch::full({}, static_cast<double>(steps), p.options().dtype(torch::kFloat32));
  s->steps = steps;
  groups_.at(group).state.at(index) = std::move(s);
}

void AdamW::clear_state() {
  for (auto& g : groups_)
    for (auto& s : g.state) s.reset();
}

std::unique_ptr<AdamW> make_adamw(const std::vector<ParamGroup>& groups, const OptimConfig& config) {
  return std::make_unique<AdamW>(groups, config);
}

torch::Tensor clip_grad_norm(const std::vector<torch::Tensor>& params, double max_norm) {
  // Grouped by dtype as PyTorch groups them: one foreach call per group.
  std::map<c10::ScalarType, std::vector<torch::Tensor>> grads;
  for (const auto& p : params)
    if (p.grad().defined()) grads[p.grad().scalar_type()].push_back(p.grad());
  if (grads.empty()) return torch::zeros({}, torch::kFloat32);
  std::vector<torch::Tensor> norms;
  for (const auto& [dtype, list] : grads)
    for (const auto& n : at::_foreach_norm(list, 2)) norms.push_back(n.to(torch::kFloat32));
  torch::Tensor total = torch::linalg_vector_norm(torch::stack(norms), 2, c10::nullopt, false, c10::nullopt);
  if (max_norm > 0) {
    torch::Tensor coef = (max_norm / (total + 1e-6)).clamp_max(1.0);
    for (auto& [dtype, list] : grads) at::_foreach_mul_(list, coef.to(dtype));
  }
  return total;
}

std::string describe_clipping(const OptimConfig& config) {
  if (config.grad_clip <= 0) return "gradient clipping: off (optim.grad_clip 0)";
  return fmt::format("gradient clipping: global L2 norm <= {} per optimizer step, after the data-parallel average",
                     config.grad_clip);
}

std::string describe_groups(const std::vector<ParamGroup>& groups) {
  std::string out = fmt::format("{:<16} {:>8} {:>12} {:>8} {:>9}\n", "group", "tensors", "parameters", "wd", "lr_scale");
  for (const auto& g : groups) {
    int64_t n = 0;
    for (const auto& p : g.params) n += p.numel();
    out += fmt::format("{:<16} {:>8} {:>12} {:>8.4g} {:>9.4g}\n", g.name, g.params.size(), n, g.weight_decay, g.lr_scale);
  }
  return out;
}

}  // namespace nepa
