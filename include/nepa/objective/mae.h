// MAE (He et al., "Masked Autoencoders Are Scalable Vision Learners"; official code facebookresearch/mae,
// models_mae.py): the shared trunk encodes a random subset of the patches (the backbone's token-subset forward),
// a light decoder puts mask tokens at the hidden positions, runs its own blocks and predicts every patch's
// pixels; the loss is the MSE on (normalised) pixels of the hidden patches only.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>

#include "nepa/config/config.h"
#include "nepa/model/layers.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/objective.h"
#include "nepa/objective/pixels.h"

namespace nepa {

// The kept (visible) patches of each image: the first int(N x (1 - mask_ratio)) of a random permutation, in that
// order, as the release's random_masking (argsort of uniform noise, smallest kept). [B, K] int64. Draws from the
// global CPU generator whatever the device, so a resumed run replays the same masks.
torch::Tensor mae_random_keep(int64_t batch, int64_t num_patches, double mask_ratio);

// The decoder block's configuration as a trunk ModelConfig, so the decoder reuses the backbone's block
// (NepaLayer): timm's Block as models_mae.py builds it (qkv bias, GELU MLP, no QK-Norm, no LayerScale, no RoPE).
ModelConfig mae_decoder_block_config(const MaeConfig& mae);

// models_mae.py's decoder, with its names: decoder_embed (trunk width -> decoder width), mask_token, fixed 2-D
// sin-cos positions (no parameter; the CLS token, if the trunk has one, gets the zero row), decoder_blocks,
// decoder_norm, decoder_pred (-> p * p * C).
class MaeDecoderImpl : public torch::nn::Module {
 public:
  MaeDecoderImpl(const MaeConfig& mae, const ModelConfig& trunk);
  // latent [B, (1 +) K, D]: the trunk's output on the kept patches ids_keep [B, K] of a gh x gw grid.
  // Returns the pixel prediction of every patch [B, gh * gw, p * p * C], in raster order.
  torch::Tensor forward(const torch::Tensor& latent, const torch::Tensor& ids_keep, int64_t gh, int64_t gw);
  // The release's initialisation: xavier-uniform Linear weights, zero biases, LayerNorms (1, 0), mask token
  // N(0, 0.02); seeded by the global generator.
  void init_weights();

  torch::nn::Linear decoder_embed{nullptr}, decoder_pred{nullptr};
  torch::Tensor mask_token;  // [1, 1, decoder_width]
  torch::nn::ModuleList decoder_blocks{nullptr};
  LayerNorm decoder_norm{nullptr};

 private:
  bool cls_;
};
TORCH_MODULE(MaeDecoder);

struct MaeLoss {
  torch::Tensor loss;    // scalar, differentiable
  torch::Tensor pred;    // [B, N, P]
  torch::Tensor latent;  // [B, (1 +) K, D] the trunk's last_hidden_state on the kept patches
};

// One MAE forward + loss with the kept patches given ([B, K] int64): the trunk on them, the decoder, the loss on
// the other patches. The objective draws ids_keep; tests fix them.
MaeLoss mae_forward_loss(ViTNepaModel& trunk, MaeDecoder& decoder, const torch::Tensor& pixels,
                         const torch::Tensor& ids_keep, const MaeConfig& mae);

// MAE as a plug-in: the decoder as module "mae_decoder", a fresh random mask per image and step, the metric
// "visible" (the kept fraction), and the trunk exported alone in the Hugging Face layout (the release fine-tunes
// the encoder; the decoder stays in the training checkpoints).
class MaeObjective : public Objective {
 public:
  MaeObjective(const MaeConfig& mae, const ModelConfig& model);
  NamedModules modules() override { return {{"mae_decoder", decoder_.ptr()}}; }
  ObjectiveOutput forward(ViTNepaModel& backbone, const torch::Tensor& pixels) override;
  void export_model(const std::string& dir, ViTNepaModel& backbone) override;
  MaeDecoder& decoder() { return decoder_; }

 private:
  MaeConfig mae_;
  ModelConfig model_;
  MaeDecoder decoder_{nullptr};
};

}  // namespace nepa
