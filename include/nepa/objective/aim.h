// AIM (NEPA-SPEC §8; "Scalable Pre-training of Large Autoregressive Image Models", official code apple/ml-aim):
// raster-order next-patch-pixel prediction on the shared trunk, without CLS token, under prefix-causal attention;
// an MLP head turns every token into the pixels of the next patch; MSE against per-patch normalised pixels on the
// patches after the prefix. The release (aim-v1/) ships the trunk and its attentive probe, not the pretraining
// head or loss: where a fact comes from the paper or MAE instead, src/objective/aim.cpp says so.
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

// [B, T, T] bool, true = query i may attend to key j: j <= i (causal) or j < s_b (the key is in image b's prefix),
// the rule of the release's PrefixCausalAttention (aim-v1/aim/v1/torch/layers.py). A prefix token so sees the
// whole prefix and nothing after it; a token after the prefix sees every earlier token and itself.
torch::Tensor prefix_causal_mask(const torch::Tensor& prefix_lengths, int64_t tokens);

// Mean over the predicted patches of the per-patch mean squared error. pred and target are [B, N - 1, P]: row t
// is token t's prediction of patch t + 1. Patch j of image b counts when j >= s_b (after the prefix). In float32
// or wider (the inputs' type, never narrower).
torch::Tensor aim_patch_loss(const torch::Tensor& pred, const torch::Tensor& target,
                             const torch::Tensor& prefix_lengths);

// One head block: x + MLP(LN(x)), the MLP without biases (the paper's head; the trunk's blocks are built the
// same way in aim-v1/aim/v1/torch/layers.py Block/MLP, with use_bias false in models.py Transformer).
class AimHeadBlockImpl : public torch::nn::Module {
 public:
  AimHeadBlockImpl(int64_t width, int64_t hidden, double eps);
  torch::Tensor forward(const torch::Tensor& x);
  LayerNorm norm{nullptr};
  torch::nn::Linear fc1{nullptr}, fc2{nullptr};
};
TORCH_MODULE(AimHeadBlock);

// The pixel head: proj (trunk width -> head width) [+ sin-cos position], head_blocks AimHeadBlocks, norm, out
// (-> p * p * C pixels). Applied to every token independently.
class AimPixelHeadImpl : public torch::nn::Module {
 public:
  AimPixelHeadImpl(const AimConfig& aim, const ModelConfig& model);
  // tokens [B, T, D] at positions pos_embed [T, W] (undefined = none) -> [B, T, p * p * C].
  torch::Tensor forward(const torch::Tensor& tokens, const torch::Tensor& pos_embed = {});
  // Truncated normal (std model.initializer_range) for every Linear, LayerNorms to (1, 0); global generator.
  void init_weights(double std);

  torch::nn::Linear proj{nullptr}, out{nullptr};
  torch::nn::ModuleList blocks{nullptr};
  LayerNorm norm{nullptr};
};
TORCH_MODULE(AimPixelHead);

struct AimLoss {
  torch::Tensor loss;  // scalar, differentiable
  torch::Tensor pred;  // [B, N - 1, P] head outputs (tokens 0 .. N-2)
};

// One AIM forward + loss with the prefix lengths given ([B] int64): the trunk under the prefix-causal mask, the
// head on tokens 0..N-2, the loss on patches s..N-1. The objective draws the lengths; tests fix them.
AimLoss aim_forward_loss(ViTNepaModel& trunk, AimPixelHead& head, const torch::Tensor& pixels,
                         const torch::Tensor& prefix_lengths, const AimConfig& aim);

// AIM as a plug-in: the pixel head as module "aim_head", a prefix length per image drawn uniformly in
// [prefix_min, prefix_max] from the global generator (so resume replays it), the metric "prefix" (mean s), and the
// trunk exported alone in the Hugging Face layout (the release publishes backbones without the pixel head; the
// head stays in the training checkpoints).
class AimObjective : public Objective {
 public:
  AimObjective(const AimConfig& aim, const ModelConfig& model);
  NamedModules modules() override { return {{"aim_head", head_.ptr()}}; }
  ObjectiveOutput forward(ViTNepaModel& backbone, const torch::Tensor& pixels) override;
  void export_model(const std::string& dir, ViTNepaModel& backbone) override;
  AimPixelHead& head() { return head_; }

 private:
  AimConfig aim_;
  ModelConfig model_;
  AimPixelHead head_{nullptr};
};

}  // namespace nepa
