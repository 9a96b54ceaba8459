#include "nepa/objective/aim.h"

#include <torch/torch.h>

#include <stdexcept>

#include "nepa/io/hf_checkpoint.h"

// Where each AIM fact comes from. The release, apple/ml-aim at aim-v1/:
//   aim/v1/torch/layers.py  PrefixCausalAttention: allowed(i, j) = (j <= i) or (key j in the prefix), a boolean
//                           mask handed to F.scaled_dot_product_attention; SinCosPosEmbed (MAE's 2-D table, no
//                           CLS row); LayerNorm eps 1e-6; MLP/Block pre-norm residual with optional biases.
//   aim/v1/torch/models.py  ViTPreprocessor(cls_token=False) with sin-cos positions; Transformer(use_bias=False)
//                           and Attention(qkv_bias=False); a final LayerNorm on the trunk (post_trunk_norm).
// Not in the release (its code is inference only), taken from the paper (§3 and its pre-training setup): the
// prefix length drawn uniformly per image and the loss only on the non-prefix patches; the head of 12 MLP
// blocks of width 2048 with expansion 4 on each token independently, sin-cos positions added before it, no
// biases; per-patch normalised pixel targets. The normalisation itself is MAE's norm_pix_loss
// (facebookresearch/mae models_mae.py forward_loss: mean and unbiased var over the patch's pixels, eps 1e-6, MSE
// averaged over the pixels, then over the predicted patches).

namespace nepa {

namespace {
torch::nn::Linear linear_no_bias(int64_t in, int64_t out) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(false));
}
}  // namespace

torch::Tensor prefix_causal_mask(const torch::Tensor& prefix_lengths, int64_t tokens) {
  if (prefix_lengths.dim() != 1)
    throw std::invalid_argument("prefix_causal_mask: prefix_lengths must be [B], got " + c10::str(prefix_lengths.sizes()));
  auto opts = torch::TensorOptions().dtype(torch::kInt64).device(prefix_lengths.device());
  torch::Tensor i = torch::arange(tokens, opts).view({1, tokens, 1});
  torch::Tensor j = torch::arange(tokens, opts).view({1, 1, tokens});
  torch::Tensor in_prefix = j < prefix_lengths.to(torch::kInt64).view({-1, 1, 1});
  return torch::logical_or(j <= i, in_prefix);
}

torch::Tensor aim_patch_loss(const torch::Tensor& pred, const torch::Tensor& target,
                             const torch::Tensor& prefix_lengths) {
  if (pred.dim() != 3 || pred.sizes() != target.sizes() || prefix_lengths.dim() != 1 ||
      prefix_lengths.size(0) != pred.size(0))
    throw std::invalid_argument("aim_patch_loss: pred " + c10::str(pred.sizes()) + ", target " +
                                c10::str(target.sizes()) + " and prefix_lengths " + c10::str(prefix_lengths.sizes()) +
                                " must be [B, N-1, P], [B, N-1, P] and [B]");
  const auto wide = pred.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  torch::Tensor per_patch = (pred.to(wide) - target.to(wide)).pow(2).mean(-1);  // [B, N-1]
  // Row t predicts patch t + 1; it counts when that patch is after the prefix.
  torch::Tensor patch = torch::arange(1, pred.size(1) + 1, torch::TensorOptions().dtype(torch::kInt64).device(pred.device()));
  torch::Tensor counted = (patch.unsqueeze(0) >= prefix_lengths.to(pred.device()).unsqueeze(1)).to(wide);
  torch::Tensor n = counted.sum();
  if (n.item<double>() == 0)
    throw std::invalid_argument("aim_patch_loss: every patch is in the prefix; nothing is predicted");
  return (per_patch * counted).sum() / n;
}

// ---- head ---------------------------------------------------------------------------------------------

AimHeadBlockImpl::AimHeadBlockImpl(int64_t width, int64_t hidden, double eps) {
  norm = register_module("norm", LayerNorm(width, eps));
  fc1 = register_module("fc1", linear_no_bias(width, hidden));
  fc2 = register_module("fc2", linear_no_bias(hidden, width));
}

torch::Tensor AimHeadBlockImpl::forward(const torch::Tensor& x) {
  return x + fc2->forward(torch::gelu(fc1->forward(norm->forward(x))));
}

AimPixelHeadImpl::AimPixelHeadImpl(const AimConfig& aim, const ModelConfig& model) {
  const int64_t w = aim.head_width;
  proj = register_module("proj", linear_no_bias(model.hidden_size, w));
  blocks = register_module("blocks", torch::nn::ModuleList());
  for (int i = 0; i < aim.head_blocks; ++i)
    blocks->push_back(AimHeadBlock(w, static_cast<int64_t>(aim.head_mlp_ratio) * w, aim.head_norm_eps));
  norm = register_module("norm", LayerNorm(w, aim.head_norm_eps));
  out = register_module("out", linear_no_bias(w, static_cast<int64_t>(model.patch_size) * model.patch_size *
                                                     model.num_channels));
  init_weights(model.initializer_range);
}

void AimPixelHeadImpl::init_weights(double std) {
  torch::NoGradGuard g;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) trunc_normal_(lin->weight, std);
    else if (auto* ln = m->as<LayerNorm>()) ln->reset_parameters();
  }
}

torch::Tensor AimPixelHeadImpl::forward(const torch::Tensor& tokens, const torch::Tensor& pos_embed) {
  torch::Tensor x = proj->forward(tokens);
  if (pos_embed.defined()) x = x + pos_embed.to(x.dtype());
  for (const auto& block : *blocks) x = block->as<AimHeadBlock>()->forward(x);
  return out->forward(norm->forward(x));
}

// ---- objective ----------------------------------------------------------------------------------------

AimLoss aim_forward_loss(ViTNepaModel& trunk, AimPixelHead& head, const torch::Tensor& pixels,
                         const torch::Tensor& prefix_lengths, const AimConfig& aim) {
  const ModelConfig& c = trunk->config();
  if (c.use_cls_token)
    throw std::invalid_argument("aim_forward_loss: the trunk has a CLS token (model.use_cls_token); AIM's has none");
  const int64_t p = c.patch_size, gh = pixels.size(2) / p, gw = pixels.size(3) / p, n = gh * gw;
  ForwardOptions options;
  options.attn_mask = prefix_causal_mask(prefix_lengths.to(pixels.device()), n);
  torch::Tensor h = trunk->forward(pixels, options).last_hidden_state;  // [B, N, D] after the trunk's LayerNorm
  torch::Tensor tokens = h.narrow(1, 0, n - 1);                           // token t predicts patch t + 1
  torch::Tensor pos;
  if (aim.head_pos_embed)
    pos = sincos_pos_embed_2d(gh, gw, head->proj->options.out_features(), h.options()).narrow(0, 0, n - 1);
  AimLoss out;
  out.pred = head->forward(tokens, pos);
  torch::Tensor target;
  {
    torch::NoGradGuard g;
    const auto wide = pixels.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
    target = patchify(pixels.to(wide), p).narrow(1, 1, n - 1);
    if (aim.norm_pix_loss) target = normalized_patch_targets(target, aim.norm_pix_eps);
  }
  out.loss = aim_patch_loss(out.pred, target, prefix_lengths);
  return out;
}

AimObjective::AimObjective(const AimConfig& aim, const ModelConfig& model)
    : aim_(aim), model_(model), head_(AimPixelHead(aim, model)) {}

ObjectiveOutput AimObjective::forward(ViTNepaModel& backbone, const torch::Tensor& pixels) {
  const int64_t n = (pixels.size(2) / model_.patch_size) * (pixels.size(3) / model_.patch_size);
  const int64_t lo = aim_.prefix_min, hi = aim_.prefix_max.value_or(static_cast<int>(n - 1));
  if (hi > n - 1 || lo > hi)
    throw std::invalid_argument("AIM: prefix lengths [" + std::to_string(lo) + ", " + std::to_string(hi) +
                                "] do not fit " + std::to_string(n) + " patches");
  // Drawn on the CPU generator whatever the device, so the draws (and a resumed run's) do not depend on it.
  torch::Tensor s = host_to_device(
      torch::randint(lo, hi + 1, {pixels.size(0)}, torch::TensorOptions().dtype(torch::kInt64)), pixels.device());
  AimLoss l = aim_forward_loss(backbone, head_, pixels, s, aim_);
  return {l.loss, {{"prefix", s.to(torch::kFloat32).mean()}}};
}

void AimObjective::export_model(const std::string& dir, ViTNepaModel& backbone) {
  save_hf_model(dir, backbone, HfModelConfig{model_, {}, {}, {}});
}

}  // namespace nepa
