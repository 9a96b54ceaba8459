// I-JEPA (Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding Predictive Architecture";
// official code facebookresearch/ijepa): the shared trunk encodes one context block of patches (its token-subset
// forward), an EMA copy of it (the target encoder) encodes every patch, and a narrow predictor, fed the context
// tokens and mask tokens at the positions of several target blocks, regresses the target encoder's layer-normed
// features there with a smooth L1 loss. src/objective/ijepa.cpp cites the release file by file.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>
#include <utility>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/model/layers.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/objective.h"

namespace nepa {

// The block masks of one batch on a gh x gw grid, as the release's MaskCollator (src/masks/multiblock.py).
struct IjepaMasks {
  torch::Tensor context;               // [B, Kc] int64: the context block's patches, minus the targets
  std::vector<torch::Tensor> targets;  // num_pred_masks x [B, Kt] int64
  std::pair<int64_t, int64_t> target_size, context_size;  // the (h, w) of the blocks drawn for this batch
};

// The block sizes are ijepa_block_size's (config/objective_config.h). Draws one batch's masks from a generator seeded by one draw of the global CPU generator, so a batch's masks
// depend on neither the thread count nor the device, and a resumed run replays them. Per batch: the target and
// context block sizes; per image: num_pred_masks target blocks anywhere, then the context block restricted to
// outside all of them (unless allow_overlap), each redrawn until it holds more than min_keep patches (after 20
// failures the context drops one target's restriction, as the release); finally every image's blocks are cut to
// the batch's smallest (ascending patch order), so each is a [B, K] tensor. Throws when no block can be found.
IjepaMasks ijepa_block_masks(int64_t batch, int64_t gh, int64_t gw, const IjepaConfig& config);

// The predictor's block as a trunk ModelConfig (the release's vit_predictor: timm Block, qkv bias, GELU MLP of
// ratio 4, LayerNorm eps 1e-6), so it reuses the backbone's block.
ModelConfig ijepa_predictor_block_config(const IjepaConfig& ijepa, const ModelConfig& trunk);

// src/models/vision_transformer.py VisionTransformerPredictor, with its names: predictor_embed (trunk width ->
// predictor width), mask_token, fixed 2-D sin-cos positions, predictor_blocks, predictor_norm, predictor_proj
// (-> trunk width).
class IjepaPredictorImpl : public torch::nn::Module {
 public:
  IjepaPredictorImpl(const IjepaConfig& ijepa, const ModelConfig& trunk);
  // context [B, Kc, D] (the trunk on context_ids [B, Kc]) -> the predictions at every target block, mask-major as
  // the release concatenates them: [T * B, Kt, D], rows t * B + b.
  torch::Tensor forward(const torch::Tensor& context, const torch::Tensor& context_ids,
                        const std::vector<torch::Tensor>& target_ids, int64_t gh, int64_t gw);
  // The release's initialisation: truncated normal (std) Linear weights and mask token, zero biases, LayerNorms
  // (1, 0), then each block's attention and MLP output projections divided by sqrt(2 x its 1-based depth).
  void init_weights(double std);

  torch::nn::Linear predictor_embed{nullptr}, predictor_proj{nullptr};
  torch::Tensor mask_token;  // [1, 1, predictor_width]
  torch::nn::ModuleList predictor_blocks{nullptr};
  LayerNorm predictor_norm{nullptr};
};
TORCH_MODULE(IjepaPredictor);

struct IjepaLoss {
  torch::Tensor loss;    // scalar, differentiable through the trunk and the predictor
  torch::Tensor pred;    // [T * B, Kt, D]
  torch::Tensor target;  // [T * B, Kt, D] the target encoder's layer-normed features at the target blocks
};

// One I-JEPA forward + loss with the masks given (tests fix them; the objective draws them).
IjepaLoss ijepa_forward_loss(ViTNepaModel& encoder, ViTNepaModel& target_encoder, IjepaPredictor& predictor,
                             const torch::Tensor& pixels, const IjepaMasks& masks);

// I-JEPA as a plug-in: modules "ijepa_predictor" (trained) and "target_encoder" (a copy of the backbone at the
// start, requires_grad false: no optimizer group, no gradient, no all-reduce; checkpointed and resumed with the
// rest). After every optimizer step the target follows the backbone with momentum ema[0] -> ema[1], linear over
// the run's steps (the release's momentum_scheduler). The export is the target encoder, which the paper
// evaluates.
class IjepaObjective : public Objective {
 public:
  IjepaObjective(const IjepaConfig& ijepa, const ModelConfig& model);
  void attach(ViTNepaModel& backbone) override;
  NamedModules modules() override;
  void begin(int64_t total_steps) override { total_steps_ = total_steps; }
  ObjectiveOutput forward(ViTNepaModel& backbone, const torch::Tensor& pixels) override;
  void after_step(int64_t step, const torch::Tensor& skipped) override;
  void export_model(const std::string& dir, ViTNepaModel& backbone) override;
  // The target encoder, as the paper evaluates and export_model writes.
  ViTNepaModel readout_encoder(const ViTNepaModel& /*backbone*/) override { return target_; }
  // The momentum after optimizer step `step` (1-based) of `total_steps`.
  static double momentum(const std::vector<double>& ema, int64_t step, int64_t total_steps);

 private:
  IjepaConfig ijepa_;
  ModelConfig model_;
  IjepaPredictor predictor_{nullptr};
  ViTNepaModel target_{nullptr};
  // The target's parameters and the backbone's of the same names, paired once at attach() (module.to() moves
  // them in place, so the handles stay valid), for the per-step momentum update's foreach calls.
  std::vector<torch::Tensor> target_params_, online_params_;
  int64_t total_steps_ = 0;
};

}  // namespace nepa
