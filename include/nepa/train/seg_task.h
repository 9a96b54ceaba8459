// Semantic segmentation as a TrainTask: NepaSegmenter (bidirectional backbone + UPerNet) trained as mmseg's
// BEiT/MAE ADE20K recipe: cross entropy (ignore 255) on the decode head's logits upsampled to the crop, plus
// seg.aux_weight x the auxiliary head's; BEiT layer-decay groups and the poly schedule with linear warmup
// (seg_schedule.h); SyncBN over the data-parallel group; mIoU / mAcc / aAcc on whole evaluation images
// (seg_evaluate.h) for the weights and, with train.ema, their EMA. The per-class table of the last evaluation is
// <output_dir>/seg_per_class.{csv,md}; the best mIoU's weights are kept in <output_dir>/best/ (best_ema/).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/data/dataset.h"
#include "nepa/data/seg_transforms.h"
#include "nepa/eval/seg_evaluate.h"
#include "nepa/model/segmenter.h"
#include "nepa/train/llrd.h"
#include "nepa/train/trainer.h"

namespace nepa {

// The pieces of the seg section the model, the loader and the evaluation take.
UPerNetOptions upernet_options(const Config& config, int64_t num_classes);
SegTrainOptions seg_train_options(const Config& config);                 // crop = data.image_size
SegEvalOptions seg_eval_options(const Config& config, torch::Device device);
// seg.out_indices, which nepa_seg needs (ConfigError naming the key when empty).
std::vector<int> seg_out_indices(const Config& config);

// mmseg's CrossEntropyLoss on `logits` [B, C, h, w] resized (bilinear, align_corners false) to the labels'
// [B, H, W] (int64, 255 = ignore): per-pixel losses (0 at ignored pixels) summed and divided by all B*H*W pixels,
// or, with avg_non_ignore, by the labelled ones only.
torch::Tensor seg_cross_entropy(const torch::Tensor& logits, const torch::Tensor& labels, bool avg_non_ignore,
                                int64_t ignore_index = 255);

// `model` (in eval mode for the call) on data.eval_split-style `dataset` as the config's seg section tests it: the
// first seg.eval_samples images (0 = all), sharded over `comm`; `images` is how many were scored.
struct SegEvaluation {
  SegMetrics metrics;
  int64_t images = 0;
};
SegEvaluation evaluate_segmenter(NepaSegmenter& model, const Dataset& dataset, const Config& config,
                                 torch::Device device, dist::Comm* comm);

// What load_segmenter_init changed: backbone tensors from the file; the rest keeps its fresh init.
struct SegmenterInit {
  int64_t loaded = 0;
  std::vector<std::string> expected_new;      // QK-Norm affine weights a release backbone lacks
  std::vector<std::string> missing_backbone;  // only with seg.allow_missing
  std::vector<std::string> unused;            // tensors of the file the segmenter does not use (a classifier head)
};
// The backbone of `model` from seg.init (read as finetune.init is: checkpoint, HF folder or file; EMA with
// seg.init_ema). A file that lacks backbone tensors is an error unless seg.allow_missing. Throws naming the file.
SegmenterInit load_segmenter_init(NepaSegmenter& model, const SegConfig& seg);

// A trained segmenter for evaluation and prediction: an export folder of nepa_seg (model.safetensors +
// config.yaml, which gives the architecture and the normalisation) or a nepa_seg checkpoint (the architecture of
// `config`). Loaded strictly, in eval mode. `config` receives the export's model/seg/data sections when it has them.
NepaSegmenter load_segmenter(const std::string& weights, Config& config);
// <dir>/model.safetensors (every tensor under the segmenter's names), config.json (the backbone, HF layout, with
// id2label), config.yaml (the run's config, which load_segmenter reads back).
void save_segmenter(const std::string& dir, NepaSegmenter& model, const Config& config,
                    const std::vector<std::string>& class_names);

class SegTask : public TrainTask {
 public:
  // `eval_set` may be null (no evaluation); `class_names` label the tables and the export.
  SegTask(const Config& config, NepaSegmenter model, std::shared_ptr<const Dataset> eval_set, torch::Device device,
          dist::Comm* comm = nullptr, std::vector<std::string> class_names = {});

  torch::nn::Module& module() override { return *model_; }
  std::vector<ParamGroup> param_groups() override { return groups_.groups; }
  StepOutput forward(const Batch& batch) override;
  std::map<std::string, torch::Tensor> extra_state() override;
  void load_extra_state(const std::map<std::string, torch::Tensor>& extra) override;
  std::vector<std::pair<std::string, double>> evaluate(int64_t step) override;
  void export_final(const std::string& dir) override;
  std::unique_ptr<LrSchedule> make_schedule(const Config& config, int64_t total_steps) override;
  int64_t eval_every(const Config& config, int64_t steps_per_epoch) override;

  NepaSegmenter& model() { return model_; }
  const LlrdGroups& groups() const { return groups_; }
  double best_miou() const { return best_miou_; }

 private:
  Config config_;
  NepaSegmenter model_;
  NepaSegmenter eval_twin_{nullptr};  // holds the EMA weights while they are evaluated / exported
  std::shared_ptr<const Dataset> eval_set_;
  torch::Device device_;
  dist::Comm* comm_;
  std::vector<std::string> class_names_;
  LlrdGroups groups_;
  double best_miou_ = -1.0;

  NepaSegmenter& ema_twin();
};

}  // namespace nepa
