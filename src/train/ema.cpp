#include "nepa/train/ema.h"

#include <torch/torch.h>

#include <stdexcept>

#include "nepa/io/hf_checkpoint.h"

namespace nepa {

Ema::Ema(const torch::nn::Module& module, double decay) : decay_(decay) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state_dict(module))
    shadow_[name] = t.is_floating_point() ? t.detach().to(torch::kFloat32).clone() : t.detach().clone();
}

void Ema::update(const torch::nn::Module& module) {
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state_dict(module)) {
    auto it = shadow_.find(name);
    if (it == shadow_.end()) throw std::logic_error("Ema::update: the module gained tensor " + name);
    if (t.is_floating_point()) it->second.lerp_(t.detach().to(torch::kFloat32), 1.0 - decay_);
    else it->second.copy_(t);
  }
}

void Ema::copy_to(torch::nn::Module& target) const {
  torch::NoGradGuard no_grad;
  for (const auto& [name, t] : state_dict(target)) {
    auto it = shadow_.find(name);
    if (it == shadow_.end()) throw std::logic_error("Ema::copy_to: no average for " + name);
    t.copy_(it->second);
  }
}

std::map<std::string, torch::Tensor> Ema::state(const std::string& prefix) const {
  std::map<std::string, torch::Tensor> out;
  for (const auto& [name, t] : shadow_) out[prefix + name] = t;
  return out;
}

void Ema::load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix) {
  torch::NoGradGuard no_grad;
  for (auto& [name, t] : shadow_) {
    auto it = tensors.find(prefix + name);
    if (it == tensors.end()) throw std::runtime_error("checkpoint has no EMA tensor " + prefix + name);
    if (it->second.sizes() != t.sizes())
      throw std::runtime_error("checkpoint EMA tensor " + prefix + name + " has another shape");
    t.copy_(it->second);
  }
}

}  // namespace nepa
