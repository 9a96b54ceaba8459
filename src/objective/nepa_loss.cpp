#include "nepa/objective/nepa_loss.h"

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

#include "nepa/io/hf_checkpoint.h"

namespace nepa {

NepaLoss next_embedding_loss(const torch::Tensor& h, const torch::Tensor& z, bool shift, bool stop_grad) {
  if (h.dim() != 3 || h.sizes() != z.sizes())
    throw std::invalid_argument("next_embedding_loss: last_hidden_state " + c10::str(h.sizes()) +
                                " and input_embedding " + c10::str(z.sizes()) + " must both be [B, T, D]");
  if (shift && h.size(1) < 2)
    throw std::invalid_argument("next_embedding_loss: shift needs at least 2 tokens, got " + std::to_string(h.size(1)));
  torch::Tensor target = stop_grad ? z.detach() : z;
  torch::Tensor pred = h;
  if (shift) {
    int64_t t = h.size(1);
    pred = h.narrow(1, 0, t - 1);
    target = target.narrow(1, 1, t - 1);
  }
  namespace F = torch::nn::functional;
  auto unit = F::NormalizeFuncOptions().dim(-1).eps(1e-12);
  torch::Tensor p = F::normalize(pred.to(torch::kFloat32), unit);
  torch::Tensor q = F::normalize(target.to(torch::kFloat32), unit);
  torch::Tensor cos = (p * q).sum(-1);
  NepaLoss out;
  out.loss = -cos.mean();
  torch::NoGradGuard g;
  out.mean_cos = cos.mean().detach();
  out.pred_std = p.detach().reshape({-1, p.size(-1)}).std(0).mean();
  return out;
}

torch::Tensor random_patch_mask(int64_t batch, int64_t num_patches, double ratio, const torch::Device& device) {
  int64_t k = static_cast<int64_t>(std::llround(ratio * static_cast<double>(num_patches)));
  auto opts = torch::TensorOptions().device(device);
  // Rank of a uniform noise per patch: the k smallest are masked (a uniform random subset of size k).
  torch::Tensor ranks = torch::rand({batch, num_patches}, opts.dtype(torch::kFloat32)).argsort(int64_t{1}, false).argsort(int64_t{1}, false);
  return ranks < k;
}

NepaLoss nepa_forward_loss(ViTNepaModel& model, const torch::Tensor& pixel_values, const ObjectiveConfig& objective) {
  ForwardOptions options;
  if (objective.mask_ratio > 0) {
    const auto& c = model->config();
    int64_t n = (pixel_values.size(2) / c.patch_size) * (pixel_values.size(3) / c.patch_size);
    options.bool_masked_pos = random_patch_mask(pixel_values.size(0), n, objective.mask_ratio, pixel_values.device());
  }
  NepaOutputs out = model->forward(pixel_values, options);
  return next_embedding_loss(out.last_hidden_state, out.input_embedding, objective.shift, objective.stop_grad);
}

ObjectiveOutput NepaObjective::forward(ViTNepaModel& backbone, const torch::Tensor& pixels) {
  NepaLoss l = nepa_forward_loss(backbone, pixels, objective_);
  return {l.loss, {{"cos", l.mean_cos}, {"pred_std", l.pred_std}}};
}

void NepaObjective::export_model(const std::string& dir, ViTNepaModel& backbone) {
  save_hf_model(dir, backbone, HfModelConfig{model_, {}, {}, {}});
}

}  // namespace nepa
