// Top-k accuracy, per-class accuracy and the confusion matrix of a classifier over an evaluation loader. With a
// sharded loader and a process group, counts are summed over ranks so every rank reports the same figures.
#pragma once

#include <torch/types.h>

#include <functional>
#include <string>
#include <vector>

#include "nepa/data/loader.h"
#include "nepa/dist/comm.h"

namespace nepa {

// Number of rows of `logits` [B, C] whose label is among the k largest logits (k is capped at C).
int64_t topk_correct(const torch::Tensor& logits, const torch::Tensor& labels, int64_t k);

struct ClassificationResult {
  int64_t count = 0;
  int64_t top1 = 0, top5 = 0;  // correct predictions
  torch::Tensor confusion;     // int64 [C, C], CPU: rows = true class, columns = predicted
  double top1_pct() const { return count ? 100.0 * top1 / count : 0.0; }
  double top5_pct() const { return count ? 100.0 * top5 / count : 0.0; }
};

// Runs `logits_of` (eval mode, no grad: the caller's business) on every batch of the loader's current epoch.
ClassificationResult evaluate_classifier(const std::function<torch::Tensor(const torch::Tensor&)>& logits_of,
                                         DataLoader& loader, int64_t num_classes, dist::Comm* comm = nullptr);

// The dense confusion matrix with class names as header row and first column; per-class accuracy as rows of
// "class,name,images,correct,accuracy" (percent). Written atomically.
void write_confusion_csv(const ClassificationResult& r, const std::vector<std::string>& names, const std::string& path);
void write_per_class_csv(const ClassificationResult& r, const std::vector<std::string>& names, const std::string& path);

}  // namespace nepa
