#include "nepa/io/hf_checkpoint.h"

#include <torch/torch.h>

#include <filesystem>
#include <set>

#include "nepa/io/safetensors.h"

namespace nepa {
namespace fs = std::filesystem;

namespace {
std::string shape_str(const torch::Tensor& t) { return c10::str(t.sizes()); }

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (const auto& x : v) s += (s.empty() ? "" : ", ") + x;
  return s;
}
}  // namespace

std::string LoadReport::summary() const {
  std::string s;
  if (!missing.empty()) s += "missing keys (" + std::to_string(missing.size()) + "): " + join(missing) + "\n";
  if (!unexpected.empty()) s += "unexpected keys (" + std::to_string(unexpected.size()) + "): " + join(unexpected) + "\n";
  if (!mismatched.empty()) s += "shape mismatches (" + std::to_string(mismatched.size()) + "): " + join(mismatched) + "\n";
  return s;
}

std::map<std::string, torch::Tensor> state_dict(const torch::nn::Module& module, const std::string& prefix) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& p : module.named_parameters(true)) out[prefix + p.key()] = p.value();
  for (const auto& b : module.named_buffers(true)) out[prefix + b.key()] = b.value();
  return out;
}

LoadReport load_state_dict(torch::nn::Module& module, const std::map<std::string, torch::Tensor>& tensors,
                           bool strict, const std::string& source, const std::string& prefix) {
  auto own = state_dict(module, prefix);
  LoadReport r;
  for (const auto& [name, t] : own) {
    auto it = tensors.find(name);
    if (it == tensors.end()) {
      r.missing.push_back(name);
    } else if (it->second.sizes() != t.sizes()) {
      r.mismatched.push_back(name + ": file " + shape_str(it->second) + " vs model " + shape_str(t));
    }
  }
  for (const auto& [name, t] : tensors)
    if (!own.count(name)) r.unexpected.push_back(name);
  if (strict && !r.ok()) throw std::runtime_error("cannot load " + source + " strictly:\n" + r.summary());

  torch::NoGradGuard g;
  for (auto& [name, t] : own) {
    auto it = tensors.find(name);
    if (it != tensors.end() && it->second.sizes() == t.sizes()) t.copy_(it->second);
  }
  return r;
}

LoadReport load_backbone_weights(ViTNepaModel& model, const std::string& safetensors_path, bool strict) {
  auto tensors = load_safetensors(safetensors_path);
  bool prefixed = false;
  for (const auto& kv : tensors)
    if (kv.first.rfind(kBackbonePrefix, 0) == 0) prefixed = true;
  return load_state_dict(*model, tensors, strict, safetensors_path, prefixed ? kBackbonePrefix : "");
}

LoadedModel load_hf_model(const std::string& model_path, const std::string& weights, bool strict) {
  LoadedModel out;
  fs::path p(model_path);
  fs::path config_path = fs::is_directory(p) ? p / "config.json" : p;
  out.config = read_hf_config(config_path.string());
  out.model = ViTNepaModel(out.config.model);
  if (!weights.empty()) {
    out.weights_path = weights;
  } else if (fs::is_directory(p)) {
    out.weights_path = (p / "model.safetensors").string();
  } else {
    throw std::runtime_error(model_path + ": a config.json alone has no weights: pass the weights file too (a "
                             "random backbone is nepa_tool init)");
  }
  // Given weights must load: a missing file is an error here, never a random backbone.
  if (!fs::is_regular_file(out.weights_path))
    throw std::runtime_error(out.weights_path + ": no such weights file" +
                             (weights.empty() ? " in the model folder " + model_path : std::string()));
  out.report = load_backbone_weights(out.model, out.weights_path, strict);
  out.model->eval();
  return out;
}

void save_hf_model(const std::string& dir, ViTNepaModel& model, const HfModelConfig& config,
                   const std::map<std::string, torch::Tensor>& extra) {
  fs::create_directories(dir);
  auto tensors = state_dict(*model, kBackbonePrefix);
  for (const auto& [k, v] : extra) tensors[k] = v;
  save_safetensors((fs::path(dir) / "model.safetensors").string(), tensors);
  write_hf_config(config, (fs::path(dir) / "config.json").string());
}

}  // namespace nepa
