#include "nepa/train/ema.h"

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <fmt/format.h>
#include <torch/torch.h>

#include <set>
#include <stdexcept>

#include "nepa/io/hf_checkpoint.h"

namespace nepa {

Ema::Ema(const torch::nn::Module& module, double decay) : decay_(decay) {
  torch::NoGradGuard no_grad;
  // A tensor is a parameter when the module lists it as one (by storage: state_dict names parameters and buffers
  // alike).
  std::set<const void*> parameters;
  for (const auto& p : module.parameters(/*recurse=*/true)) parameters.insert(p.unsafeGetTensorImpl());
  for (const auto& [name, t] : state_dict(module)) {
    names_.push_back(name);
    tracked_.push_back(t);
    shadow_.push_back(t.is_floating_point() ? t.detach().to(torch::kFloat32).clone() : t.detach().clone());
    Half& half = halves_[parameters.count(t.unsafeGetTensorImpl()) ? 1 : 0];
    half.all.push_back(names_.size() - 1);
    if (t.scalar_type() == torch::kFloat32) {
      half.float_src.push_back(t);
      half.float_dst.push_back(shadow_.back());
    } else {
      half.others.push_back(names_.size() - 1);
    }
  }
}

void Ema::update_buffers(int64_t step) { update_half(halves_[0], step); }

void Ema::update_parameters(int64_t step) { update_half(halves_[1], step); }

void Ema::update_half(const Half& half, int64_t step) {
  torch::NoGradGuard no_grad;
  if (step <= 1) {
    for (size_t i : half.all) shadow_[i].copy_(tracked_[i]);
    return;
  }
  // One launch per op for all float32 tensors (the weights); anything else, one by one.
  if (!half.float_dst.empty()) {
    at::_foreach_mul_(half.float_dst, decay_);
    at::_foreach_add_(half.float_dst, half.float_src, 1.0 - decay_);
  }
  for (size_t i : half.others) {
    const torch::Tensor& t = tracked_[i];
    if (t.is_floating_point()) shadow_[i].mul_(decay_).add_(t.to(torch::kFloat32), 1.0 - decay_);
    else shadow_[i].copy_(t);
  }
}

void Ema::copy_to(torch::nn::Module& target) const {
  torch::NoGradGuard no_grad;
  const std::map<std::string, torch::Tensor> mine = state("");
  for (const auto& [name, t] : state_dict(target)) {
    auto it = mine.find(name);
    if (it == mine.end()) throw std::logic_error("Ema::copy_to: no average for " + name);
    t.copy_(it->second);
  }
}

std::map<std::string, torch::Tensor> Ema::state(const std::string& prefix) const {
  std::map<std::string, torch::Tensor> out;
  for (size_t i = 0; i < names_.size(); ++i) out[prefix + names_[i]] = shadow_[i];
  return out;
}

void Ema::load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix) {
  torch::NoGradGuard no_grad;
  for (size_t i = 0; i < names_.size(); ++i) {
    auto it = tensors.find(prefix + names_[i]);
    if (it == tensors.end()) throw std::runtime_error("checkpoint has no EMA tensor " + prefix + names_[i]);
    if (it->second.sizes() != shadow_[i].sizes())
      throw std::runtime_error("checkpoint EMA tensor " + prefix + names_[i] + " has another shape");
    shadow_[i].copy_(it->second);
  }
}

std::string describe_ema(const TrainConfig& config) {
  if (!config.ema) return "EMA of the weights: off (train.ema false)";
  return fmt::format("EMA of the weights: decay {} per optimizer step (averages over ~{:.0f} steps), from the weights "
                     "after step 1", config.ema_decay, 1.0 / std::max(1.0 - config.ema_decay, 1e-12));
}

}  // namespace nepa
