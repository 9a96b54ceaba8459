#include "nepa/model/classifier.h"

#include <torch/torch.h>

#include <filesystem>

#include "nepa/io/safetensors.h"

namespace nepa {
namespace fs = std::filesystem;

ViTNepaForImageClassificationImpl::ViTNepaForImageClassificationImpl(const ModelConfig& model, int64_t num_classes)
    : num_classes_(num_classes) {
  if (num_classes <= 0) throw std::invalid_argument("classifier: num_classes must be positive");
  vit_nepa = register_module("vit_nepa", ViTNepaModel(model));
  fc_norm = register_module("fc_norm", LayerNorm(model.hidden_size, model.layer_norm_eps));
  classifier = register_module("classifier", torch::nn::Linear(model.hidden_size, num_classes));
  torch::NoGradGuard no_grad;
  trunc_normal_(classifier->weight, model.initializer_range);
  classifier->bias.zero_();
}

torch::Tensor ViTNepaForImageClassificationImpl::features(const torch::Tensor& pixel_values) {
  torch::Tensor h = vit_nepa->forward(pixel_values).last_hidden_state;
  return fc_norm->forward(h.narrow(1, 1, h.size(1) - 1).mean(1));
}

torch::Tensor ViTNepaForImageClassificationImpl::forward(const torch::Tensor& pixel_values) {
  return classifier->forward(features(pixel_values));
}

std::map<std::string, torch::Tensor> read_classifier_weights(const std::string& path_in) {
  std::string path = path_in;
  if (fs::is_directory(path)) path = (fs::path(path) / "model.safetensors").string();
  if (!fs::exists(path)) throw std::runtime_error("finetune.init: " + path + " does not exist");
  std::map<std::string, torch::Tensor> file = load_safetensors(path), out;
  bool training_checkpoint = false;
  for (const auto& [k, v] : file)
    if (k.rfind("model.", 0) == 0) training_checkpoint = true;
  for (const auto& [k, v] : file) {
    std::string key = k;
    if (training_checkpoint) {
      if (key.rfind("model.", 0) != 0) continue;  // optimizer moments, generator states, EMA
      key = key.substr(6);
    }
    // A backbone saved on its own (a pretraining checkpoint, a bare ViTNepaModel file) has no prefix.
    const bool head = key.rfind("fc_norm.", 0) == 0 || key.rfind("classifier.", 0) == 0;
    if (!head && key.rfind(kBackbonePrefix, 0) != 0) key = kBackbonePrefix + key;
    out[key] = v;
  }
  if (out.empty()) throw std::runtime_error("finetune.init: " + path + " holds no model tensors");
  return out;
}

LoadReport load_classifier_init(ViTNepaForImageClassification& model, const std::string& path) {
  LoadReport report = load_state_dict(*model, read_classifier_weights(path), /*strict=*/false, path);
  if (!report.mismatched.empty())
    throw std::runtime_error(path + ": tensors do not fit the model:\n" + report.summary());
  return report;
}

void save_hf_classifier(const std::string& dir, ViTNepaForImageClassification& model,
                        const std::vector<std::string>& labels) {
  HfModelConfig hf;
  hf.model = model->vit_nepa->config();
  hf.architectures = {"ViTNepaForImageClassification"};
  hf.id2label = labels;
  if (hf.id2label.empty())
    for (int64_t c = 0; c < model->num_classes(); ++c) hf.id2label.push_back(std::to_string(c));
  std::map<std::string, torch::Tensor> head;
  for (const auto& [name, t] : state_dict(*model))
    if (name.rfind("fc_norm.", 0) == 0 || name.rfind("classifier.", 0) == 0) head[name] = t;
  save_hf_model(dir, model->vit_nepa, hf, head);
}

}  // namespace nepa
