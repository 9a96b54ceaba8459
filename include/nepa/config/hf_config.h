// The official Hugging Face `config.json` of vit_nepa checkpoints <-> ModelConfig (NEPA-SPEC §7).
#pragma once

#include <string>
#include <vector>

#include "nepa/config/config.h"

namespace nepa {

struct HfModelConfig {
  ModelConfig model;
  std::vector<std::string> architectures;  // e.g. ViTNepaForPreTraining, ViTNepaForImageClassification
  std::vector<std::string> id2label;       // classification checkpoints: label names by class index
  std::vector<std::string> ignored_keys;   // keys of the file that are not model fields (dtype, versions, ...)
};

// Reads config.json. Wrong types or impossible values -> ConfigError naming the file and key.
HfModelConfig read_hf_config(const std::string& path);
HfModelConfig parse_hf_config(const std::string& json_text, const std::string& name = "<config.json>");

// Writes config.json with every field the official reader expects (model_type vit_nepa, ...).
std::string to_hf_config_json(const HfModelConfig& config);
void write_hf_config(const HfModelConfig& config, const std::string& path);

// A fine-tuning or segmentation run starts from a backbone folder (`init`, with its config.json) and takes the
// keys of model.* that define the trunk's tensors and computation from it, as the release builds its classifier
// from the pretrained config: sizes, activation and gating, q/k/v bias, QK-Norm, LayerNorm epsilon, LayerScale,
// RoPE / absolute / sin-cos positions, CLS token. The run's own keys (is_causal, drop_path_prob, dropout,
// image_size, position augmentation, mask token) stay as its config says. Returns one line per key that changed
// ("model.use_cls_token: true -> false"), for the log; nothing when `init` is not a folder with a config.json (a
// training checkpoint), or when the config already agrees.
std::vector<std::string> adopt_backbone_architecture(ModelConfig& model, const std::string& init);

}  // namespace nepa
