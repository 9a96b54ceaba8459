// Segmentation inference on whole images and evaluation over a set, as mmseg's ADE20K test does: each image
// resized keeping its ratio to the test scale (2048, 512), normalised, segmented by sliding windows (or whole), the
// logits resized back to the original label size, and one confusion summed over the set and the ranks.
#pragma once

#include <opencv2/core/mat.hpp>
#include <torch/types.h>

#include <functional>
#include <vector>

#include "nepa/data/dataset.h"
#include "nepa/dist/comm.h"
#include "nepa/eval/segmentation.h"

namespace nepa {

struct SegEvalOptions {
  int scale_long = 2048, scale_short = 512;  // keep-ratio test resize
  int crop = 518, stride = 341;              // sliding windows (crop 0: the whole image at once)
  int patch = 14;                            // model inputs are padded (bottom/right, 0) to a multiple of this
  std::vector<double> mean = {0.5, 0.5, 0.5}, std = {0.5, 0.5, 0.5};
  int channels = 3;
  torch::Device device = torch::kCPU;  // where the image tensor, the model and the window sums live
};

// The model on one normalised input [1, C, h, w] (h, w multiples of the patch): class logits [1, K, h', w'] at any
// resolution (the decode head's stride-4 map); they are resized to the input size as mmseg's encode_decode does.
using SegModelFn = std::function<torch::Tensor(const torch::Tensor&)>;

// The class map (int64 [H, W], CPU) of one uint8 image at its own size.
torch::Tensor segment_image(const cv::Mat& image, const SegModelFn& model, const SegEvalOptions& options);

// Every rank segments images rank, rank + W, ... of `dataset` (the first `limit` only, when > 0) and the confusion
// is summed over the ranks. An unreadable image or map stops the evaluation (DataError): a figure over a silently
// smaller set would not be the set's.
SegConfusion evaluate_segmentation(const Dataset& dataset, const SegModelFn& model, const SegEvalOptions& options,
                                   dist::Comm* comm = nullptr, int64_t limit = 0);

}  // namespace nepa
