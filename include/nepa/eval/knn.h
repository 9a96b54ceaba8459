// k-NN readout of frozen features: a label-free signal of what pretraining learned. Features are L2-normalised,
// similarity is the cosine, and the k nearest memory images vote (one vote each; ties go to the class with the
// larger summed similarity).
#pragma once

#include <torch/types.h>

#include <cstdint>

#include "nepa/data/loader.h"
#include "nepa/dist/comm.h"
#include "nepa/model/vit_nepa.h"

namespace nepa {

struct Features {
  torch::Tensor mean_pooled;  // float32 [N, D], CPU: mean of the patch tokens of last_hidden_state (CLS excluded)
  torch::Tensor last_token;   // float32 [N, D], CPU: the last token, which (causally) has seen the whole image
  torch::Tensor labels;       // int64 [N], CPU
};

// Runs `model` in eval mode (no grad) over the loader's current epoch (LoaderOptions::limit bounds it; a
// sharded loader gives this rank's share), and restores the module's training flag afterwards.
Features extract_features(ViTNepaModel& model, DataLoader& loader);

// Every rank's features, concatenated in rank order, on every rank (identity for a world of one).
Features all_gather(dist::Comm& comm, const Features& local);

// Top-1 accuracy in [0, 1] of the k-NN classifier with `memory` as the labelled set. Queries are scored in
// chunks so the similarity matrix never exceeds chunk x N_memory.
double knn_top1(const torch::Tensor& memory, const torch::Tensor& memory_labels, const torch::Tensor& queries,
                const torch::Tensor& query_labels, int k, int num_classes);

}  // namespace nepa
