#include "nepa/model/upernet.h"

#include <torch/torch.h>

namespace nepa {
namespace F = torch::nn::functional;

namespace {

constexpr double kBnEps = 1e-5, kBnMomentum = 0.1;

// Per-channel sums over batch and space, [C].
torch::Tensor channel_sum(const torch::Tensor& x) { return x.sum({0, 2, 3}); }
torch::Tensor as_channels(const torch::Tensor& v) { return v.view({1, -1, 1, 1}); }

// Training-mode BatchNorm whose statistics span the group `reducer` sums over, and whose backward sums the
// statistics' gradients over the same group, as torch.nn.SyncBatchNorm: a group of N processes then trains as one
// process on the concatenated batch. Two passes (mean, then the centred squares) as BatchNorm computes them: the
// sum-of-squares shortcut loses float32 precision when the mean is large next to the spread.
class SyncBatchNormFunction : public torch::autograd::Function<SyncBatchNormFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, const Reducer* reducer,
                               torch::Tensor running_mean, torch::Tensor running_var) {
    const auto reduce = [&](torch::Tensor t) {
      if (*reducer) (*reducer)(t);
      return t;
    };
    torch::Tensor count = torch::full({1}, static_cast<double>(x.numel() / x.size(1)), x.options());
    torch::Tensor sum_and_count = reduce(torch::cat({channel_sum(x), count}));
    const int64_t c = x.size(1);
    const torch::Tensor n = sum_and_count.narrow(0, c, 1);
    const torch::Tensor mean = sum_and_count.narrow(0, 0, c) / n;
    const torch::Tensor centred = x - as_channels(mean);
    const torch::Tensor var = reduce(channel_sum(centred * centred)) / n;  // biased, as BatchNorm normalises
    const torch::Tensor invstd = (var + kBnEps).rsqrt();
    {
      // The running variance is the unbiased one, as BatchNorm keeps it (tensor arithmetic: no host sync).
      torch::NoGradGuard no_grad;
      running_mean.mul_(1 - kBnMomentum).add_(mean, kBnMomentum);
      running_var.mul_(1 - kBnMomentum).add_(var * n / (n - 1).clamp_min(1), kBnMomentum);
    }
    const torch::Tensor xhat = centred * as_channels(invstd);
    ctx->save_for_backward({xhat, weight, invstd, n});
    ctx->saved_data["reducer"] = reinterpret_cast<int64_t>(reducer);
    return xhat * as_channels(weight) + as_channels(bias);
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor &xhat = saved[0], &weight = saved[1], &invstd = saved[2], &n = saved[3];
    const auto* reducer = reinterpret_cast<const Reducer*>(ctx->saved_data["reducer"].toInt());
    const torch::Tensor dy = grads[0];
    const torch::Tensor local_dy = channel_sum(dy), local_dy_xhat = channel_sum(dy * xhat);
    // The parameters' gradients stay local: the gradient average over ranks turns them into the global ones.
    torch::Tensor sums = torch::cat({local_dy, local_dy_xhat});
    if (*reducer) (*reducer)(sums);
    const int64_t c = xhat.size(1);
    const torch::Tensor mean_dy = sums.narrow(0, 0, c) / n, mean_dy_xhat = sums.narrow(0, c, c) / n;
    const torch::Tensor dx = as_channels(weight * invstd) *
                             (dy - as_channels(mean_dy) - xhat * as_channels(mean_dy_xhat));
    return {dx, local_dy_xhat, local_dy, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

}  // namespace

SyncBatchNorm2dImpl::SyncBatchNorm2dImpl(int64_t channels) {
  weight = register_parameter("weight", torch::ones({channels}));
  bias = register_parameter("bias", torch::zeros({channels}));
  running_mean = register_buffer("running_mean", torch::zeros({channels}));
  running_var = register_buffer("running_var", torch::ones({channels}));
  num_batches_tracked = register_buffer("num_batches_tracked", torch::zeros({}, torch::kInt64));
}

torch::Tensor SyncBatchNorm2dImpl::forward(const torch::Tensor& x_in) {
  // In float32 also under bf16 autocast, where BatchNorm runs in float32 too.
  const torch::Tensor x = x_in.scalar_type() == torch::kFloat32 ? x_in : x_in.to(torch::kFloat32);
  if (is_training()) {
    torch::NoGradGuard no_grad;
    num_batches_tracked.add_(1);
  }
  // Evaluation and one process: ATen's fused batch norm (one pass each way). Its own elementwise form costs ~3 % of
  // a ViT-S segmentation step (bench/RESULTS.md, section 4), so the custom function runs only when statistics
  // must cross processes.
  if (!is_training() || !reducer_)
    return torch::batch_norm(x, weight, bias, running_mean, running_var, is_training(), kBnMomentum, kBnEps,
                             /*cudnn_enabled=*/true);
  return SyncBatchNormFunction::apply(x, weight, bias, &reducer_, running_mean, running_var);
}

ConvModuleImpl::ConvModuleImpl(int64_t in, int64_t out, int64_t kernel) {
  conv = register_module(
      "conv", torch::nn::Conv2d(torch::nn::Conv2dOptions(in, out, kernel).padding(kernel / 2).bias(false)));
  bn = register_module("bn", SyncBatchNorm2d(out));
}

torch::Tensor ConvModuleImpl::forward(const torch::Tensor& x) { return torch::relu(bn->forward(conv->forward(x))); }

namespace {
torch::nn::ConvTranspose2d up2(int64_t dim) {
  return torch::nn::ConvTranspose2d(torch::nn::ConvTranspose2dOptions(dim, dim, 2).stride(2));
}
}  // namespace

FeaturePyramidImpl::FeaturePyramidImpl(int64_t dim) {
  // Named as mmseg's BEiT backbone: fpn1.{0,1,2,3} (GELU at 2 has no weights), fpn2.0, fpn3 identity.
  fpn1 = register_module("fpn1", torch::nn::Sequential(up2(dim), SyncBatchNorm2d(dim), torch::nn::GELU(), up2(dim)));
  fpn2 = register_module("fpn2", torch::nn::Sequential(up2(dim)));
  fpn4 = register_module("fpn4", torch::nn::MaxPool2d(torch::nn::MaxPool2dOptions(2).stride(2)));
}

std::vector<torch::Tensor> FeaturePyramidImpl::forward(const std::vector<torch::Tensor>& grids) {
  TORCH_CHECK(grids.size() == 4, "FeaturePyramid: expected 4 feature grids, got ", grids.size());
  return {fpn1->forward(grids[0]), fpn2->forward(grids[1]), grids[2], fpn4->forward(grids[3])};
}

namespace {
torch::Tensor resize_to(const torch::Tensor& x, const torch::Tensor& like) {
  return F::interpolate(x, F::InterpolateFuncOptions()
                               .size(std::vector<int64_t>{like.size(2), like.size(3)})
                               .mode(torch::kBilinear)
                               .align_corners(false));
}
torch::nn::Conv2d classifier(int64_t in, int64_t classes) {
  return torch::nn::Conv2d(torch::nn::Conv2dOptions(in, classes, 1));
}
}  // namespace

UPerHeadImpl::UPerHeadImpl(const UPerNetOptions& o) {
  const int64_t levels = 4;
  psp_modules = register_module("psp_modules", torch::nn::ModuleList());
  for (int64_t s : o.pool_scales)  // names psp_modules.<i>.1.conv: index 0 is the (weightless) pooling
    psp_modules->push_back(torch::nn::Sequential(torch::nn::AdaptiveAvgPool2d(s), ConvModule(o.in_channels, o.channels, 1)));
  bottleneck = register_module(
      "bottleneck",
      ConvModule(o.in_channels + static_cast<int64_t>(o.pool_scales.size()) * o.channels, o.channels, 3));
  lateral_convs = register_module("lateral_convs", torch::nn::ModuleList());
  fpn_convs = register_module("fpn_convs", torch::nn::ModuleList());
  for (int64_t i = 0; i + 1 < levels; ++i) {
    lateral_convs->push_back(ConvModule(o.in_channels, o.channels, 1));
    fpn_convs->push_back(ConvModule(o.channels, o.channels, 3));
  }
  fpn_bottleneck = register_module("fpn_bottleneck", ConvModule(levels * o.channels, o.channels, 3));
  dropout = register_module("dropout", torch::nn::Dropout2d(o.dropout));
  conv_seg = register_module("conv_seg", classifier(o.channels, o.num_classes));
}

torch::Tensor UPerHeadImpl::forward(const std::vector<torch::Tensor>& levels) {
  TORCH_CHECK(levels.size() == 4, "UPerHead: expected 4 pyramid levels, got ", levels.size());
  // Pyramid pooling on the coarsest level.
  const torch::Tensor& top = levels.back();
  std::vector<torch::Tensor> pooled = {top};
  for (const auto& m : *psp_modules) pooled.push_back(resize_to(m->as<torch::nn::Sequential>()->forward(top), top));
  std::vector<torch::Tensor> laterals;
  for (size_t i = 0; i + 1 < levels.size(); ++i)
    laterals.push_back(lateral_convs[i]->as<ConvModule>()->forward(levels[i]));
  laterals.push_back(bottleneck->forward(torch::cat(pooled, 1)));
  // Top-down: each level adds the upsampled coarser one.
  for (size_t i = laterals.size() - 1; i > 0; --i) laterals[i - 1] = laterals[i - 1] + resize_to(laterals[i], laterals[i - 1]);
  std::vector<torch::Tensor> outs;
  for (size_t i = 0; i + 1 < laterals.size(); ++i) outs.push_back(fpn_convs[i]->as<ConvModule>()->forward(laterals[i]));
  outs.push_back(laterals.back());
  for (size_t i = 1; i < outs.size(); ++i) outs[i] = resize_to(outs[i], outs[0]);
  return conv_seg->forward(dropout->forward(fpn_bottleneck->forward(torch::cat(outs, 1))));
}

FCNHeadImpl::FCNHeadImpl(const UPerNetOptions& o) {
  convs = register_module("convs", torch::nn::ModuleList());
  convs->push_back(ConvModule(o.in_channels, o.aux_channels, 3));
  dropout = register_module("dropout", torch::nn::Dropout2d(o.dropout));
  conv_seg = register_module("conv_seg", classifier(o.aux_channels, o.num_classes));
}

torch::Tensor FCNHeadImpl::forward(const torch::Tensor& level) {
  return conv_seg->forward(dropout->forward(convs[0]->as<ConvModule>()->forward(level)));
}

UPerNetImpl::UPerNetImpl(const UPerNetOptions& o) {
  pyramid = register_module("backbone", FeaturePyramid(o.in_channels));
  decode_head = register_module("decode_head", UPerHead(o));
  auxiliary_head = register_module("auxiliary_head", FCNHead(o));
}

UPerNetOutput UPerNetImpl::forward(const std::vector<torch::Tensor>& grids) {
  const std::vector<torch::Tensor> levels = pyramid->forward(grids);
  return {decode_head->forward(levels), auxiliary_head->forward(levels[2])};
}

void UPerNetImpl::set_batch_norm_sync(const Reducer& reducer) {
  for (auto& m : modules(/*include_self=*/false))
    if (auto* bn = m->as<SyncBatchNorm2d>()) bn->set_reducer(reducer);
}

}  // namespace nepa
