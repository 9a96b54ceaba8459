// A NEPA backbone with UPerNet on top: the patch tokens after four blocks (model.* config; mmseg's BEiT/MAE
// choice is blocks 3/5/7/11 of B, 7/11/15/23 of L, counted from 0) reshaped to their grid feed the pyramid. The
// grid's stride is the patch size (14 for NEPA), so the pyramid's levels are at 3.5/7/14/28 pixels and the class
// map at a quarter of the patch size; it is upsampled to the label size by the loss and by inference.
//
// Names: vit_nepa.* (the Hugging Face backbone, as the classifier names it), then mmseg's backbone.fpn*,
// decode_head.*, auxiliary_head.*.
#pragma once

#include <torch/nn/module.h>

#include <vector>

#include "nepa/model/upernet.h"
#include "nepa/model/vit_nepa.h"

namespace nepa {

class NepaSegmenterImpl : public torch::nn::Module {
 public:
  NepaSegmenterImpl(const ModelConfig& backbone, const UPerNetOptions& head, std::vector<int> out_indices);
  UPerNetOutput forward(const torch::Tensor& pixel_values);
  // The four [B, D, H/p, W/p] grids the heads see (patch tokens of the chosen blocks, CLS dropped).
  std::vector<torch::Tensor> features(const torch::Tensor& pixel_values);
  const std::vector<int>& out_indices() const { return out_indices_; }
  int64_t num_classes() const { return upernet->decode_head->conv_seg->options.out_channels(); }

  ViTNepaModel vit_nepa{nullptr};
  UPerNet upernet{nullptr};  // its parts are registered here under mmseg's names

 private:
  std::vector<int> out_indices_;
};
TORCH_MODULE(NepaSegmenter);

}  // namespace nepa
