// Exponential moving average of a module's weights, as the release keeps it in pretraining (run_nepa.py) and
// fine-tuning (run_image_classification.py): once per optimizer step every floating-point parameter and buffer
// e <- decay * e + (1 - decay) * w (mul_ then add_, in float32); other buffers are copied. Like the release, the
// average starts as a copy of the weights after the first step (it creates its EMA model at the first update),
// not of the initial weights. The training loop owns it (train.ema); copy_to() puts it into a twin module.
#pragma once

#include <ATen/Context.h>
#include <torch/nn/module.h>

#include <map>
#include <string>
#include <vector>

#include "nepa/config/config.h"

namespace nepa {

class Ema {
 public:
  // Tracks `module`'s parameters and buffers as they are now (move the module to its device first).
  Ema(const torch::nn::Module& module, double decay);
  // After optimizer step `step` (1-based): step 1 copies the weights, later steps average them in.
  void update(int64_t step) {
    update_buffers(step);
    update_parameters(step);
  }
  // The same in two halves, for a loop that learns only later whether a step was good (train()): the buffers
  // (e.g. BatchNorm's running statistics) change in the next step's forward, so they are averaged as the step
  // ends; the parameters change only in the next optimizer step, so they can wait until the step's figures are
  // read. Either order gives update()'s result bit for bit. (So a step found non-finite leaves the parameters'
  // average as it was, while the buffers' has taken that step, as the model's own buffers have.)
  void update_buffers(int64_t step);
  void update_parameters(int64_t step);
  // Writes the averaged weights into `target` (same parameter and buffer names as the tracked module).
  void copy_to(torch::nn::Module& target) const;
  double decay() const { return decay_; }

  // For checkpoints: the averaged tensors as "<prefix><name>", and back (every name must be present).
  std::map<std::string, torch::Tensor> state(const std::string& prefix = "ema.") const;
  void load_state(const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix = "ema.");

 private:
  double decay_;
  std::vector<std::string> names_;
  std::vector<torch::Tensor> tracked_, shadow_;  // parallel to names_
  // Per half (0 = buffers, 1 = parameters): the float32 pairs, averaged with one foreach call each, and the
  // indices of everything else (other dtypes), one by one.
  struct Half {
    std::vector<torch::Tensor> float_src, float_dst;
    std::vector<size_t> others;
    std::vector<size_t> all;
  };
  Half halves_[2];
  void update_half(const Half& half, int64_t step);
};

// Runs `make` (typically the constructor of a twin module whose init is overwritten at once) and puts the global
// CPU generator back as it was: a module made mid-run, such as the EMA's evaluation twin, must not shift the drop-path
// masks of every later step, or a run resumed after that point (which makes its twin later) would no longer equal
// the uninterrupted one.
template <class Make>
auto without_drawing(Make&& make) {
  at::Generator gen = at::globalContext().defaultGenerator(at::kCPU);
  const torch::Tensor state = gen.get_state();
  auto made = make();
  gen.set_state(state);
  return made;
}

// "EMA of the weights: decay ... (averages over ~N steps)" or "... off": for the start of a run and --dry-run.
std::string describe_ema(const TrainConfig& config);

}  // namespace nepa
