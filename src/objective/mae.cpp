#include "nepa/objective/mae.h"

#include <torch/torch.h>

#include <stdexcept>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/objective/blocks.h"

// Where each MAE fact comes from: facebookresearch/mae, models_mae.py.
//   random_masking   len_keep = int(L * (1 - mask_ratio)); noise U(0, 1) per patch, argsort ascending, the first
//                    len_keep kept in that (random) order; the encoder gets them, CLS in front.
//   forward_encoder  patch embedding + fixed sin-cos positions (CLS row zero), masking, blocks, LayerNorm.
//   forward_decoder  decoder_embed on all encoder tokens, mask tokens appended and the patches unshuffled to
//                    raster order, CLS back in front, + decoder_pos_embed (fixed sin-cos, CLS row zero), blocks,
//                    decoder_norm, decoder_pred, CLS dropped.
//   forward_loss     patchify ('nchpwq->nhwpqc'), norm_pix_loss: (x - mean) / sqrt(var + 1e-6) with torch's
//                    unbiased var; per-patch mean of the squared error, averaged over the removed patches.
//   mae_vit_*_dec512d8b: decoder width 512, depth 8, 16 heads, mlp_ratio 4, LayerNorm eps 1e-6, qkv_bias.
//   initialize_weights: xavier_uniform Linear weights, zero biases, LayerNorm (1, 0), mask_token N(0, 0.02).
// The trunk is the shared backbone with its own initialisation (configs/pretrain/mae_*.yaml set its switches).

namespace nepa {

torch::Tensor mae_random_keep(int64_t batch, int64_t num_patches, double mask_ratio) {
  const int64_t keep = static_cast<int64_t>(static_cast<double>(num_patches) * (1.0 - mask_ratio));
  if (keep < 1 || keep >= num_patches)
    throw std::invalid_argument("mae_random_keep: mask_ratio " + std::to_string(mask_ratio) + " keeps " +
                                std::to_string(keep) + " of " + std::to_string(num_patches) + " patches");
  torch::Tensor noise = torch::rand({batch, num_patches}, torch::TensorOptions().dtype(torch::kFloat32));
  return noise.argsort(/*dim=*/1, /*descending=*/false).narrow(1, 0, keep).contiguous();
}

ModelConfig mae_decoder_block_config(const MaeConfig& mae) {
  return plain_block_config(mae.decoder_width, mae.decoder_heads, mae.decoder_mlp_ratio * mae.decoder_width,
                            mae.decoder_depth, mae.decoder_norm_eps);
}

MaeDecoderImpl::MaeDecoderImpl(const MaeConfig& mae, const ModelConfig& trunk) : cls_(trunk.use_cls_token) {
  const ModelConfig block = mae_decoder_block_config(mae);
  const int64_t w = mae.decoder_width;
  decoder_embed = register_module("decoder_embed", torch::nn::Linear(trunk.hidden_size, w));
  mask_token = register_parameter("mask_token", torch::zeros({1, 1, w}));
  decoder_blocks = register_module("decoder_blocks", torch::nn::ModuleList());
  for (int i = 0; i < mae.decoder_depth; ++i) decoder_blocks->push_back(NepaLayer(block, 0.0));
  decoder_norm = register_module("decoder_norm", LayerNorm(w, mae.decoder_norm_eps));
  decoder_pred = register_module(
      "decoder_pred",
      torch::nn::Linear(w, static_cast<int64_t>(trunk.patch_size) * trunk.patch_size * trunk.num_channels));
  init_weights();
}

void MaeDecoderImpl::init_weights() {
  torch::NoGradGuard g;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      torch::nn::init::xavier_uniform_(lin->weight);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* ln = m->as<LayerNorm>()) {
      ln->reset_parameters();
    }
  }
  mask_token.normal_(0.0, 0.02);
}

torch::Tensor MaeDecoderImpl::forward(const torch::Tensor& latent, const torch::Tensor& ids_keep, int64_t gh,
                                      int64_t gw) {
  const int64_t b = latent.size(0), k = ids_keep.size(1), n = gh * gw, c = cls_ ? 1 : 0;
  if (latent.dim() != 3 || latent.size(1) != c + k)
    throw std::invalid_argument("MaeDecoder: latent " + c10::str(latent.sizes()) + " is not [B, " +
                                (cls_ ? "1 + " : "") + std::to_string(k) + ", D] for ids_keep " +
                                c10::str(ids_keep.sizes()));
  torch::Tensor x = decoder_embed->forward(latent);
  const int64_t w = x.size(2);
  // Mask tokens everywhere, the kept patches written back at their grid positions: the release's append +
  // unshuffle, in one scatter.
  torch::Tensor grid = mask_token.to(x.dtype())
                           .expand({b, n, w})
                           .scatter(1, ids_keep.unsqueeze(-1).expand({b, k, w}), x.narrow(1, c, k));
  grid = grid + sincos_pos_embed_2d(gh, gw, w, x.options());
  torch::Tensor h = cls_ ? torch::cat({x.narrow(1, 0, 1), grid}, 1) : grid;
  for (const auto& block : *decoder_blocks) h = block->as<NepaLayer>()->forward(h, {}, {}, false, false).first;
  torch::Tensor pred = decoder_pred->forward(decoder_norm->forward(h));
  return pred.narrow(1, c, n);
}

MaeLoss mae_forward_loss(ViTNepaModel& trunk, MaeDecoder& decoder, const torch::Tensor& pixels,
                         const torch::Tensor& ids_keep, const MaeConfig& mae) {
  const ModelConfig& c = trunk->config();
  if (c.is_causal) throw std::invalid_argument("mae_forward_loss: MAE's encoder is bidirectional (model.is_causal)");
  const int64_t p = c.patch_size, gh = pixels.size(2) / p, gw = pixels.size(3) / p, n = gh * gw;
  torch::Tensor keep = ids_keep.to(pixels.device());
  ForwardOptions options;
  options.token_ids = keep;
  MaeLoss out;
  out.latent = trunk->forward(pixels, options).last_hidden_state;
  out.pred = decoder->forward(out.latent, keep, gh, gw);
  const auto wide = pixels.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  torch::Tensor target;
  {
    torch::NoGradGuard g;
    target = patchify(pixels.to(wide), p);
    if (mae.norm_pix_loss) target = normalized_patch_targets(target, mae.norm_pix_eps);
  }
  torch::Tensor per_patch = (out.pred.to(wide) - target).pow(2).mean(-1);  // [B, N]
  torch::Tensor hidden = torch::ones({pixels.size(0), n}, per_patch.options()).scatter(1, keep, 0.0);
  out.loss = (per_patch * hidden).sum() / hidden.sum();
  return out;
}

MaeObjective::MaeObjective(const MaeConfig& mae, const ModelConfig& model)
    : mae_(mae), model_(model), decoder_(MaeDecoder(mae, model)) {}

ObjectiveOutput MaeObjective::forward(ViTNepaModel& backbone, const torch::Tensor& pixels) {
  const int64_t n = (pixels.size(2) / model_.patch_size) * (pixels.size(3) / model_.patch_size);
  torch::Tensor keep = host_to_device(mae_random_keep(pixels.size(0), n, mae_.mask_ratio), pixels.device());
  MaeLoss l = mae_forward_loss(backbone, decoder_, pixels, keep, mae_);
  const double visible = static_cast<double>(keep.size(1)) / static_cast<double>(n);
  return {l.loss, {{"visible", torch::full({}, visible, torch::TensorOptions().device(pixels.device()))}}};
}

void MaeObjective::export_model(const std::string& dir, ViTNepaModel& backbone) {
  save_hf_model(dir, backbone, HfModelConfig{model_, {}, {}, {}});
}

}  // namespace nepa
