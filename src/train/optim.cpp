#include "nepa/train/optim.h"

#include <ATen/ops/_foreach_mul.h>
#include <ATen/ops/_foreach_norm.h>
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

std::unique_ptr<torch::optim::AdamW> make_adamw(const std::vector<ParamGroup>& groups, const OptimConfig& config) {
  auto defaults = torch::optim::AdamWOptions(0.0)
                      .betas({config.betas.at(0), config.betas.at(1)})
                      .eps(config.eps)
                      .weight_decay(config.weight_decay);
  std::vector<torch::optim::OptimizerParamGroup> torch_groups;
  for (const auto& g : groups) {
    auto options = std::make_unique<torch::optim::AdamWOptions>(defaults);
    options->weight_decay(g.weight_decay);
    torch_groups.emplace_back(g.params, std::move(options));
  }
  return std::make_unique<torch::optim::AdamW>(torch_groups, defaults);
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
