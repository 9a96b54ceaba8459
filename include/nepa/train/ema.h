// Exponential moving average of a module's weights (timm's ModelEmaV2 semantics, NEPA-SPEC §4): after every
// optimizer step each floating-point parameter and buffer e <- decay * e + (1 - decay) * w, in float32; other
// buffers are copied. The average lives outside the module; copy_to() puts it into a twin for evaluation.
#pragma once

#include <torch/nn/module.h>

#include <map>
#include <string>

namespace nepa {

class Ema {
 public:
  Ema(const torch::nn::Module& module, double decay);
  void update(const torch::nn::Module& module);
  // Writes the averaged weights into `target` (same parameter and buffer names as the tracked module).
  void copy_to(torch::nn::Module& target) const;
  double decay() const { return decay_; }

  // For checkpoints: the averaged tensors as "<prefix><name>", and back (every name must be present).
  std::map<std::string, torch::Tensor> state(const std::string& prefix = "ema.") const;
  void load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix = "ema.");

 private:
  double decay_;
  std::map<std::string, torch::Tensor> shadow_;
};

}  // namespace nepa
