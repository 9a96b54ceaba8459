// A pretraining objective on the shared backbone (issue 17 §1). PretrainTask owns the backbone and one Objective
// and asks it for everything that differs between methods, so the loop, checkpoints, resume, DDP and the apps do
// not know which objective runs. Adding one means its class and config subsection, a value of ObjectiveKind
// (config.h) and a case in make_objective; NEPA's is NepaObjective (nepa_loss.h).
#pragma once

#include <torch/nn/module.h>
#include <torch/types.h>

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/model/vit_nepa.h"

namespace nepa {

// One micro-batch's loss to backpropagate and its detached scalar metrics, by name, to average and log (the loop
// logs the loss itself as "loss").
struct ObjectiveOutput {
  torch::Tensor loss;
  std::vector<std::pair<std::string, torch::Tensor>> metrics;
};

using NamedModules = std::vector<std::pair<std::string, std::shared_ptr<torch::nn::Module>>>;

class Objective {
 public:
  virtual ~Objective() = default;
  // What the objective trains or carries beside the backbone (AIM's pixel head; I-JEPA's predictor and target
  // encoder), by name. The task carries them next to the backbone: in checkpoints as "model.<name>.*", in the
  // loop's EMA and the data-parallel replicas, and in the decay / no-decay parameter groups (a frozen module sets
  // requires_grad false and stays out of them). NEPA adds none, so its checkpoints hold the backbone's names only.
  virtual NamedModules modules() { return {}; }
  // Called once by the task with its backbone, before modules() is asked (I-JEPA's target encoder starts as a
  // copy of it).
  virtual void attach(ViTNepaModel& /*backbone*/) {}
  // Called by the loop before the first step (also when resuming) with the run's total optimizer steps, for
  // objectives with a schedule over the run (I-JEPA's target momentum).
  virtual void begin(int64_t /*total_steps*/) {}
  // Loss and metrics on one micro-batch of pixels [B, C, H, W], in training mode.
  virtual ObjectiveOutput forward(ViTNepaModel& backbone, const torch::Tensor& pixels) = 0;
  // After every optimizer step (I-JEPA's EMA target encoder follows the backbone here), with the loop's
  // `skipped` flag on the device (TrainTask::after_step): a skipped step must leave this objective's state as it was.
  virtual void after_step(int64_t /*step*/, const torch::Tensor& /*skipped*/) {}
  // Checkpoint tensors beyond modules(), saved among the task's extra state and handed back on resume; names must
  // not start with "ema." (the loop's).
  virtual std::map<std::string, torch::Tensor> extra_state() { return {}; }
  virtual void load_extra_state(const std::map<std::string, torch::Tensor>& /*extra*/) {}
  // Writes the deliverable made from `backbone` (the trained weights, or the twin holding their EMA) into `dir`.
  virtual void export_model(const std::string& dir, ViTNepaModel& backbone) = 0;
  // The encoder the readouts during pretraining (k-NN) measure: the one export_model writes, so that they describe
  // the deliverable. The backbone, or I-JEPA's target encoder.
  virtual ViTNepaModel readout_encoder(const ViTNepaModel& backbone) { return backbone; }
};

// Indices an objective drew on the host (AIM's prefixes, MAE's kept patches, I-JEPA's blocks), on `device`
// without the host waiting for the device's queue: on CUDA through pinned memory and a non-blocking copy (a
// pageable copy waits for the stream, once per micro-batch); elsewhere as .to(device).
torch::Tensor host_to_device(const torch::Tensor& host, const torch::Device& device);

// The objective config.objective.name names, built for config.model. Throws ConfigError for an unknown name.
std::unique_ptr<Objective> make_objective(const Config& config);

}  // namespace nepa
