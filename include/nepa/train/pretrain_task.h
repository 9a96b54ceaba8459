// NEPA pretraining as a TrainTask: the causal backbone, the next-embedding loss, k-NN readouts on the way, and
// the backbone exported in the Hugging Face layout at the end (and its EMA beside it, <dir>_ema, with train.ema).
#pragma once

#include <memory>

#include "nepa/config/config.h"
#include "nepa/data/dataset.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/train/trainer.h"

namespace nepa {

class NepaPretrainTask : public TrainTask {
 public:
  // `knn_memory` / `knn_queries` may be null (no k-NN). `device` is where the model lives. With `comm`, every
  // rank extracts features for its shard of the k-NN sets and all ranks report the same figures.
  NepaPretrainTask(const Config& config, ViTNepaModel model, std::shared_ptr<const Dataset> knn_memory,
                   std::shared_ptr<const Dataset> knn_queries, torch::Device device, dist::Comm* comm = nullptr);

  torch::nn::Module& module() override { return *model_; }
  std::vector<ParamGroup> param_groups() override;
  StepOutput forward(const Batch& batch) override;
  std::vector<std::pair<std::string, double>> evaluate(int64_t step) override;
  void export_final(const std::string& dir) override;

  ViTNepaModel& model() { return model_; }

 private:
  Config config_;
  ViTNepaModel model_;
  std::shared_ptr<const Dataset> knn_memory_, knn_queries_;
  torch::Device device_;
  dist::Comm* comm_;
};

}  // namespace nepa
