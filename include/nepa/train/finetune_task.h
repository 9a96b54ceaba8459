// Supervised fine-tuning as a TrainTask (NEPA-SPEC §4): the classifier (bidirectional backbone + fc_norm +
// classifier), layer-wise lr decay groups and schedule, Mixup/CutMix with label smoothing and soft-target cross
// entropy, and top-1/top-5 evaluation of both the weights and their EMA (the loop's, train.ema). The best EMA
// weights are kept in <output_dir>/best_ema/ (HF layout), the last evaluation's confusion matrix and per-class
// accuracy in <output_dir>/eval_confusion.csv and eval_per_class.csv.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/data/dataset.h"
#include "nepa/eval/classification.h"
#include "nepa/model/classifier.h"
#include "nepa/train/llrd.h"
#include "nepa/train/trainer.h"

namespace nepa {

class FinetuneTask : public TrainTask {
 public:
  // `eval_set` may be null (no evaluation). `labels`: class names for the CSVs and the exported config.json.
  FinetuneTask(const Config& config, ViTNepaForImageClassification model, std::shared_ptr<const Dataset> eval_set,
               torch::Device device, dist::Comm* comm = nullptr, std::vector<std::string> labels = {});

  torch::nn::Module& module() override { return *model_; }
  std::vector<ParamGroup> param_groups() override;
  StepOutput forward(const Batch& batch) override;
  std::map<std::string, torch::Tensor> extra_state() override;
  void load_extra_state(const std::map<std::string, torch::Tensor>& extra) override;
  std::vector<std::pair<std::string, double>> evaluate(int64_t step) override;
  void export_final(const std::string& dir) override;
  std::unique_ptr<LrSchedule> make_schedule(const Config& config, int64_t total_steps) override;
  int64_t eval_every(const Config& config, int64_t steps_per_epoch) override;

  ViTNepaForImageClassification& model() { return model_; }
  double best_ema_top1() const { return best_ema_top1_; }

 private:
  Config config_;
  ViTNepaForImageClassification model_;
  ViTNepaForImageClassification eval_twin_{nullptr};  // holds the EMA weights while they are evaluated / exported
  std::shared_ptr<const Dataset> eval_set_;
  torch::Device device_;
  dist::Comm* comm_;
  std::vector<std::string> labels_;
  LlrdGroups llrd_;
  double best_ema_top1_ = -1.0;

  ViTNepaForImageClassification& ema_twin();  // the EMA weights in a model of their own
};

// Evaluates `model` on `eval_set` (eval transform, sharded over `comm`): top-1/top-5 and the confusion matrix.
ClassificationResult evaluate_on(ViTNepaForImageClassification& model, std::shared_ptr<const Dataset> eval_set,
                                 const Config& config, torch::Device device, dist::Comm* comm);

}  // namespace nepa
