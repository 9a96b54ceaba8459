// UPerNet on a plain ViT, as mmsegmentation builds it for BEiT/MAE on ADE20K (the protocol the NEPA paper
// follows): a feature pyramid made from four blocks' patch-token grids (strides 4/8/16/32 from one stride-16
// grid), a UPerHead (pyramid pooling on the coarsest level, lateral 1x1 convs, a top-down path, 3x3 FPN convs,
// fusion at stride 4) and an auxiliary FCN head on the third level. Parameter names are mmseg's
// (backbone.fpn1.0.weight, decode_head.psp_modules.0.1.conv.weight, auxiliary_head.conv_seg.bias, ...), so that
// state dicts line up with a PyTorch reference and with mmseg checkpoints of the same shapes.
//
// BatchNorm here is SyncBN when a reducer is set (set_batch_norm_sync): the batch statistics and, in backward,
// the statistics' gradients are summed over the data-parallel group, so that N processes train as one process
// on the concatenated batch.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/sequential.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/dropout.h>
#include <torch/nn/modules/pooling.h>

#include <functional>
#include <vector>

namespace nepa {

// Sums a tensor over the data-parallel group in place (dist::Comm::all_reduce); empty = one process.
using Reducer = std::function<void(torch::Tensor&)>;

// BatchNorm2d (eps 1e-5, momentum 0.1, affine) whose training-mode statistics can span processes.
class SyncBatchNorm2dImpl : public torch::nn::Module {
 public:
  explicit SyncBatchNorm2dImpl(int64_t channels);
  torch::Tensor forward(const torch::Tensor& x);
  void set_reducer(Reducer reducer) { reducer_ = std::move(reducer); }

  torch::Tensor weight, bias, running_mean, running_var, num_batches_tracked;

 private:
  Reducer reducer_;
};
TORCH_MODULE(SyncBatchNorm2d);

// mmcv's ConvModule: conv without bias (the norm has one), BatchNorm, ReLU. Names: conv, bn.
class ConvModuleImpl : public torch::nn::Module {
 public:
  ConvModuleImpl(int64_t in, int64_t out, int64_t kernel);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Conv2d conv{nullptr};
  SyncBatchNorm2d bn{nullptr};
};
TORCH_MODULE(ConvModule);

// The four pyramid levels from four [B, D, h, w] grids (stride 16): 2x2 transposed conv, BN, GELU, 2x2 transposed
// conv (stride 4); one 2x2 transposed conv (stride 8); the grid itself (16); 2x2 max-pool (32).
class FeaturePyramidImpl : public torch::nn::Module {
 public:
  explicit FeaturePyramidImpl(int64_t dim);
  std::vector<torch::Tensor> forward(const std::vector<torch::Tensor>& grids);
  torch::nn::Sequential fpn1{nullptr}, fpn2{nullptr};
  torch::nn::MaxPool2d fpn4{nullptr};
};
TORCH_MODULE(FeaturePyramid);

struct UPerNetOptions {
  int64_t in_channels = 768;      // the backbone's width D, at every level
  int64_t channels = 768;         // UPerHead width (mmseg's BEiT-B config: 768)
  int64_t aux_channels = 256;     // FCN head width
  int64_t num_classes = 150;
  std::vector<int64_t> pool_scales = {1, 2, 3, 6};
  double dropout = 0.1;           // Dropout2d before each classifier
};

class UPerHeadImpl : public torch::nn::Module {
 public:
  explicit UPerHeadImpl(const UPerNetOptions& o);
  // Four levels (strides 4..32) -> logits [B, num_classes] at stride 4.
  torch::Tensor forward(const std::vector<torch::Tensor>& levels);
  torch::nn::ModuleList psp_modules{nullptr}, lateral_convs{nullptr}, fpn_convs{nullptr};
  ConvModule bottleneck{nullptr}, fpn_bottleneck{nullptr};
  torch::nn::Dropout2d dropout{nullptr};
  torch::nn::Conv2d conv_seg{nullptr};
};
TORCH_MODULE(UPerHead);

// mmseg's FCNHead with one 3x3 conv and no input concatenation, on one level.
class FCNHeadImpl : public torch::nn::Module {
 public:
  explicit FCNHeadImpl(const UPerNetOptions& o);
  torch::Tensor forward(const torch::Tensor& level);
  torch::nn::ModuleList convs{nullptr};
  torch::nn::Dropout2d dropout{nullptr};
  torch::nn::Conv2d conv_seg{nullptr};
};
TORCH_MODULE(FCNHead);

struct UPerNetOutput {
  torch::Tensor logits;      // [B, C, H/4, W/4]
  torch::Tensor aux_logits;  // [B, C, H/16, W/16]
};

// Pyramid + heads, as mmseg names them: backbone.fpn1/fpn2 (the pyramid lives in mmseg's BEiT backbone),
// decode_head.*, auxiliary_head.*.
class UPerNetImpl : public torch::nn::Module {
 public:
  explicit UPerNetImpl(const UPerNetOptions& o);
  // Four [B, D, h, w] grids of block outputs (patch tokens only), shallowest first.
  UPerNetOutput forward(const std::vector<torch::Tensor>& grids);
  // Makes every BatchNorm of the model SyncBN over `reducer`'s group (empty: per process).
  void set_batch_norm_sync(const Reducer& reducer);
  FeaturePyramid pyramid{nullptr};
  UPerHead decode_head{nullptr};
  FCNHead auxiliary_head{nullptr};
};
TORCH_MODULE(UPerNet);

}  // namespace nepa
