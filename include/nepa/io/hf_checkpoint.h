// Weights in the Hugging Face layout (NEPA-SPEC §7): a folder with model.safetensors + config.json, keys
// prefixed `vit_nepa.` for the backbone. Loading reports missing / unexpected / shape-mismatched keys by name.
#pragma once

#include <torch/nn/module.h>

#include <map>
#include <string>
#include <vector>

#include "nepa/config/hf_config.h"
#include "nepa/model/vit_nepa.h"

namespace nepa {

// The prefix of the backbone's keys in the released files.
inline constexpr const char* kBackbonePrefix = "vit_nepa.";

struct LoadReport {
  std::vector<std::string> missing;     // in the model, not in the file
  std::vector<std::string> unexpected;  // in the file, not in the model
  std::vector<std::string> mismatched;  // "name: file [a, b] vs model [c, d]"
  bool ok() const { return missing.empty() && unexpected.empty() && mismatched.empty(); }
  std::string summary() const;  // one line per non-empty category
};

// Parameters and buffers by name (Module::named_parameters + named_buffers), with `prefix` prepended.
std::map<std::string, torch::Tensor> state_dict(const torch::nn::Module& module, const std::string& prefix = "");

// Copies `tensors` into `module` by name; keys of the file are looked up as `prefix + name`. Values are
// converted to each parameter's dtype/device. With strict, any missing, unexpected or mismatched key throws
// std::runtime_error naming them (and `source`) before any parameter is changed.
LoadReport load_state_dict(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                           bool strict, const std::string& source, const std::string& prefix = "");

// The backbone's weights from an HF file: keys with the `vit_nepa.` prefix or without it (a bare ViTNepaModel).
LoadReport load_backbone_weights(ViTNepaModel& model, const std::string& safetensors_path, bool strict);

// A model folder (config.json + model.safetensors), or a config.json with `weights` -> the model with those
// weights, in eval mode; `weights` overrides the folder's model.safetensors. Throws when there are no weights
// to load (never a random backbone: that is nepa_tool init).
struct LoadedModel {
  HfModelConfig config;
  ViTNepaModel model{nullptr};
  LoadReport report;
  std::string weights_path;
};
LoadedModel load_hf_model(const std::string& model_path, const std::string& weights = "", bool strict = true);

// Writes <dir>/model.safetensors (keys `vit_nepa.*`, plus `extra` tensors as given) and <dir>/config.json.
void save_hf_model(const std::string& dir, ViTNepaModel& model, const HfModelConfig& config,
                   const std::map<std::string, torch::Tensor>& extra = {});

}  // namespace nepa
