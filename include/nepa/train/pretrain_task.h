// Pretraining as a TrainTask, whatever the objective: the backbone and the Objective that config.objective.name
// selects (objective/objective.h), k-NN readouts of the backbone on the way, and the objective's export at the end
// (and the same from the EMA beside it, <dir>_ema, with train.ema).
#pragma once

#include <memory>

#include "nepa/config/config.h"
#include "nepa/data/dataset.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/objective.h"
#include "nepa/train/trainer.h"

namespace nepa {

class PretrainTask : public TrainTask {
 public:
  // `model` is the backbone, already on `device`; the objective's modules are moved there. `knn_memory` /
  // `knn_queries` may be null (no k-NN). With `comm`, every rank extracts features for its shard of the k-NN sets
  // and all ranks report the same figures. Throws ConfigError for an unknown objective.name.
  PretrainTask(const Config& config, ViTNepaModel model, std::shared_ptr<const Dataset> knn_memory,
               std::shared_ptr<const Dataset> knn_queries, torch::Device device, dist::Comm* comm = nullptr);

  // The backbone's parameters, buffers and children under their own names, then the objective's modules: the
  // checkpoint names of the backbone are the same for every objective.
  torch::nn::Module& module() override { return *carried_; }
  std::vector<ParamGroup> param_groups() override;
  StepOutput forward(const Batch& batch) override;
  void after_step(int64_t step, const torch::Tensor& skipped) override { objective_->after_step(step, skipped); }
  void begin(int64_t total_steps) override { objective_->begin(total_steps); }
  std::map<std::string, torch::Tensor> extra_state() override { return objective_->extra_state(); }
  void load_extra_state(const std::map<std::string, torch::Tensor>& extra) override {
    objective_->load_extra_state(extra);
  }
  std::vector<std::pair<std::string, double>> evaluate(int64_t step) override;
  void export_final(const std::string& dir) override;

  // The backbone.
  ViTNepaModel& model() { return model_; }
  Objective& objective() { return *objective_; }

 private:
  Config config_;
  ViTNepaModel model_;
  std::unique_ptr<Objective> objective_;
  std::shared_ptr<torch::nn::Module> carried_;
  std::shared_ptr<const Dataset> knn_memory_, knn_queries_;
  torch::Device device_;
  dist::Comm* comm_;
};

}  // namespace nepa
