// The NEPA objective (NEPA-SPEC §2): position t predicts the embedding of token t+1; the loss is the
// negative cosine against the stop-gradient target.
#pragma once

#include <torch/types.h>

#include <string>

#include "nepa/config/config.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/objective.h"

namespace nepa {

struct NepaLoss {
  torch::Tensor loss;      // scalar, differentiable; lower bound -1
  torch::Tensor mean_cos;  // scalar, detached: mean cosine between predictions and targets (= -loss)
  torch::Tensor pred_std;  // scalar, detached: mean over dims of the per-dim std of the L2-normalised
                           // predictions; ~1/sqrt(D) when healthy, 0 when representations collapse
};

// h = last_hidden_state [B, T, D], z = input_embedding [B, T, D]. With shift, h[:, t] is matched to
// z[:, t+1] for t = 0..T-2; without (ablation), h[:, t] to z[:, t]. Computed in float32.
NepaLoss next_embedding_loss(const torch::Tensor& h, const torch::Tensor& z, bool shift = true, bool stop_grad = true);

// Exactly round(ratio * N) patches masked per sample, chosen uniformly; bool [B, N].
torch::Tensor random_patch_mask(int64_t batch, int64_t num_patches, double ratio, const torch::Device& device);

// One NEPA forward + loss under the objective's switches (masking draws from the global generator).
NepaLoss nepa_forward_loss(ViTNepaModel& model, const torch::Tensor& pixel_values, const ObjectiveConfig& objective);

// NEPA as a plug-in: the backbone alone (no modules, no extra state), its loss with the metrics "cos" and
// "pred_std", and the backbone exported in the Hugging Face layout.
class NepaObjective : public Objective {
 public:
  NepaObjective(const ObjectiveConfig& objective, const ModelConfig& model) : objective_(objective), model_(model) {}
  ObjectiveOutput forward(ViTNepaModel& backbone, const torch::Tensor& pixels) override;
  void export_model(const std::string& dir, ViTNepaModel& backbone) override;

 private:
  ObjectiveConfig objective_;
  ModelConfig model_;  // written to config.json as the run configured it
};

}  // namespace nepa
