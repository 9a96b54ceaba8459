#include "nepa/model/segmenter.h"

#include <torch/torch.h>

#include <stdexcept>
#include <string>

namespace nepa {

NepaSegmenterImpl::NepaSegmenterImpl(const ModelConfig& backbone, const UPerNetOptions& head,
                                     std::vector<int> out_indices)
    : out_indices_(std::move(out_indices)) {
  if (out_indices_.size() != 4)
    throw std::invalid_argument("segmenter: out_indices needs 4 blocks, got " + std::to_string(out_indices_.size()));
  for (size_t i = 0; i < 4; ++i)
    if (out_indices_[i] < 0 || out_indices_[i] >= backbone.num_hidden_layers ||
        (i > 0 && out_indices_[i] <= out_indices_[i - 1]))
      throw std::invalid_argument("segmenter: out_indices must be 4 increasing blocks in [0, " +
                                  std::to_string(backbone.num_hidden_layers) + ")");
  if (head.in_channels != backbone.hidden_size)
    throw std::invalid_argument("segmenter: the heads take " + std::to_string(head.in_channels) +
                                " channels but the backbone is " + std::to_string(backbone.hidden_size) + " wide");
  vit_nepa = register_module("vit_nepa", ViTNepaModel(backbone));
  // The heads read block outputs before the final layernorm (mmseg's BEiT/MAE backbones have final_norm off), so
  // it gets no gradient: frozen, it stays out of the optimiser groups and the gradient all-reduce. It is kept for
  // the checkpoint names.
  for (auto& p : vit_nepa->layernorm->parameters()) p.set_requires_grad(false);
  upernet = UPerNet(head);
  register_module("backbone", upernet->pyramid);
  register_module("decode_head", upernet->decode_head);
  register_module("auxiliary_head", upernet->auxiliary_head);
}

std::vector<torch::Tensor> NepaSegmenterImpl::features(const torch::Tensor& pixel_values) {
  ForwardOptions opts;
  opts.output_hidden_states = true;
  const NepaOutputs out = vit_nepa->forward(pixel_values, opts);
  const int64_t p = vit_nepa->config().patch_size;
  const int64_t h = pixel_values.size(2) / p, w = pixel_values.size(3) / p;
  std::vector<torch::Tensor> grids;
  for (int i : out_indices_) {
    const torch::Tensor& tokens = out.hidden_states.at(static_cast<size_t>(i) + 1);  // [0] is the embeddings
    const torch::Tensor patches = tokens.narrow(1, tokens.size(1) - h * w, h * w);   // CLS first, then the grid
    grids.push_back(patches.transpose(1, 2).reshape({tokens.size(0), tokens.size(2), h, w}));
  }
  return grids;
}

UPerNetOutput NepaSegmenterImpl::forward(const torch::Tensor& pixel_values) {
  return upernet->forward(features(pixel_values));
}

}  // namespace nepa
