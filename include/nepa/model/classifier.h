// Image classification on the NEPA backbone, as the release's ViTNepaForImageClassification (NEPA-SPEC §4, §7):
// the mean of the N patch tokens of last_hidden_state (CLS excluded) -> fc_norm (LayerNorm) -> classifier
// (Linear). Submodules are named as the checkpoint keys: vit_nepa.*, fc_norm.*, classifier.*.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <map>
#include <string>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/model/layers.h"
#include "nepa/model/vit_nepa.h"

namespace nepa {

class ViTNepaForImageClassificationImpl : public torch::nn::Module {
 public:
  // The backbone as `model` describes it (fine-tuning sets is_causal false and drop_path_prob 0.1); the head is
  // initialised as the release does (trunc-normal weight with std initializer_range, zero bias, LayerNorm 1/0).
  ViTNepaForImageClassificationImpl(const ModelConfig& model, int64_t num_classes);
  torch::Tensor forward(const torch::Tensor& pixel_values);  // logits [B, num_classes]
  // The pooled, normalised features fed to the classifier [B, D].
  torch::Tensor features(const torch::Tensor& pixel_values);
  int64_t num_classes() const { return num_classes_; }

  ViTNepaModel vit_nepa{nullptr};
  LayerNorm fc_norm{nullptr};
  torch::nn::Linear classifier{nullptr};

 private:
  int64_t num_classes_;
};
TORCH_MODULE(ViTNepaForImageClassification);

// Tensors of a weights file in the classifier's key space: a training checkpoint ("model.*", written by
// nepa_pretrain or nepa_finetune), an HF model.safetensors (vit_nepa.* [+ fc_norm.*, classifier.*]) or a bare
// backbone file; a folder means its model.safetensors. Throws std::runtime_error naming the file.
std::map<std::string, torch::Tensor> read_classifier_weights(const std::string& path);

// Loads what `path` holds into `model`, non-strictly: a pretraining checkpoint leaves the head (and whatever the
// configs do not share) at its fresh init, listed in the report as missing. Shape mismatches throw.
LoadReport load_classifier_init(ViTNepaForImageClassification& model, const std::string& path);

// Writes <dir>/model.safetensors + config.json in the release's classification layout (architectures
// ViTNepaForImageClassification, id2label from `labels`, or "0".."C-1").
void save_hf_classifier(const std::string& dir, ViTNepaForImageClassification& model,
                        const std::vector<std::string>& labels = {});

}  // namespace nepa
