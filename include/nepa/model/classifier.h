// Image classification on the NEPA backbone, as the release's ViTNepaForImageClassification (NEPA-SPEC §4, §7):
// the mean of the N patch tokens of last_hidden_state (CLS excluded) -> fc_norm (LayerNorm) -> classifier
// (Linear). Submodules are named as the checkpoint keys: vit_nepa.*, fc_norm.*, classifier.*.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/linear.h>

#include <functional>
#include <map>
#include <string>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/model/layers.h"
#include "nepa/model/vit_nepa.h"

namespace nepa {

// Heads on a frozen backbone (finetune.head):
//  - linear_probe (as MAE): mean of the patch tokens -> BatchNorm without affine -> classifier;
//  - attentive_probe (as AIM): BatchNorm without affine on the patch tokens, one learnable query attending over
//    them (multi-head, k/v projections without bias, q = the query itself), then the classifier.
// Probe features are the patch tokens of last_hidden_state or, with probe_blocks k > 1, the average of the last
// k blocks' outputs, each through the backbone's final layernorm.
class ProbeHeadImpl : public torch::nn::Module {
 public:
  ProbeHeadImpl(const std::string& kind, int64_t dim, int64_t heads);
  torch::Tensor forward(const torch::Tensor& patch_tokens);  // [B, N, D] -> [B, D]
  const std::string& kind() const { return kind_; }
  // Data parallel: sums a tensor over the ranks in place. With it, the BatchNorm's training statistics are those
  // of the global batch (SyncBN), so every rank normalises alike and keeps the same running statistics.
  using SumOverRanks = std::function<void(torch::Tensor&)>;
  void sync_statistics(SumOverRanks sum) { sum_over_ranks_ = std::move(sum); }

  torch::nn::BatchNorm1d norm{nullptr};
  torch::Tensor query;                            // attentive: [1, 1, D]
  torch::nn::Linear k{nullptr}, v{nullptr};       // attentive

 private:
  std::string kind_;
  int64_t heads_;
  SumOverRanks sum_over_ranks_;

  torch::Tensor normalise(const torch::Tensor& x);  // x [B, C] or [B, C, L]: BatchNorm over all dims but C
};
TORCH_MODULE(ProbeHead);

class ViTNepaForImageClassificationImpl : public torch::nn::Module {
 public:
  // The backbone as `model` describes it (fine-tuning sets is_causal false and drop_path_prob 0.1); the head is
  // initialised as HF's _init_weights does (trunc-normal weight with std initializer_range, zero bias, LayerNorm
  // 1/0). The release then zeroes the classifier when it builds a -sft model from a backbone: init_head("zeros").
  // `head`: finetune | linear_probe | attentive_probe. With a probe the backbone is frozen and always runs in
  // eval mode without gradients.
  ViTNepaForImageClassificationImpl(const ModelConfig& model, int64_t num_classes,
                                    const std::string& head = "finetune", int probe_blocks = 1);
  torch::Tensor forward(const torch::Tensor& pixel_values);  // logits [B, num_classes]
  // Re-initialises the classifier (finetune.head_init): "zeros" (weight and bias, as the release's
  // init_nepa_cls_from_pretrain.py) or "trunc_normal" (std initializer_range, zero bias).
  void init_head(const std::string& scheme);
  // The pooled features fed to the classifier [B, D].
  torch::Tensor features(const torch::Tensor& pixel_values);
  void train(bool on = true) override;
  int64_t num_classes() const { return num_classes_; }
  const std::string& head() const { return head_; }
  int probe_blocks() const { return probe_blocks_; }

  ViTNepaModel vit_nepa{nullptr};
  LayerNorm fc_norm{nullptr};  // finetune head only
  ProbeHead probe{nullptr};    // probes only
  torch::nn::Linear classifier{nullptr};

 private:
  int64_t num_classes_;
  std::string head_;
  int probe_blocks_;
};
TORCH_MODULE(ViTNepaForImageClassification);

// The head a classifier file was saved with: attentive_probe / linear_probe (probe.* keys) or finetune.
std::string head_of(const std::map<std::string, torch::Tensor>& tensors);

// Tensors of a weights file in the classifier's key space: a training checkpoint ("model.*", written by
// nepa_pretrain or nepa_finetune), an HF model.safetensors (vit_nepa.* [+ fc_norm.*, classifier.*]) or a bare
// backbone file; a folder means its model.safetensors. With `ema`, a training checkpoint's EMA weights
// ("extra.ema.*", train.ema) instead of its weights; anything else is then an error (an exported EMA is a folder
// of its own, final_ema/). Throws std::runtime_error naming the file and `key`, the config key that named it.
std::map<std::string, torch::Tensor> read_classifier_weights(const std::string& path, bool ema = false,
                                                             const std::string& key = "finetune.init");

// What load_classifier_init left at the model's fresh init.
struct ClassifierInit {
  LoadReport report;                          // everything, as load_state_dict found it
  std::vector<std::string> expected_new;      // the head (fc_norm, classifier, probe) and QK-Norm affine weights
                                              // when the source has none (the release's base -> -sft case)
  std::vector<std::string> missing_backbone;  // other backbone tensors the file lacks (only with allow_missing)
};

// Loads what `path` holds into `model`. A pretraining checkpoint leaves the head new; any other backbone tensor
// the file lacks is an error naming how many and the first few (a smaller or different architecture would
// otherwise train partly from random init), unless `allow_missing` (finetune.allow_missing). Shape mismatches
// throw.
ClassifierInit load_classifier_init(ViTNepaForImageClassification& model, const std::string& path, bool ema = false,
                                    bool allow_missing = false);

// Writes <dir>/model.safetensors + config.json in the release's classification layout (architectures
// ViTNepaForImageClassification, id2label from `labels`, or "0".."C-1").
void save_hf_classifier(const std::string& dir, ViTNepaForImageClassification& model,
                        const std::vector<std::string>& labels = {});

}  // namespace nepa
