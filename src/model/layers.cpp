#include "nepa/model/layers.h"

#include <torch/nn/functional/normalization.h>
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

namespace nepa {

LayerNormImpl::LayerNormImpl(int64_t dim, double eps, bool affine, bool with_bias) : dim_(dim), eps_(eps) {
  if (affine) weight = register_parameter("weight", torch::ones({dim}));
  if (affine && with_bias) bias = register_parameter("bias", torch::zeros({dim}));
}

torch::Tensor LayerNormImpl::forward(const torch::Tensor& x) {
  return torch::layer_norm(x, {dim_}, weight.defined() ? c10::optional<torch::Tensor>(weight) : c10::nullopt,
                           bias.defined() ? c10::optional<torch::Tensor>(bias) : c10::nullopt, eps_);
}

void LayerNormImpl::reset_parameters() {
  torch::NoGradGuard g;
  if (weight.defined()) weight.fill_(1.0);
  if (bias.defined()) bias.zero_();
}

LayerScaleImpl::LayerScaleImpl(int64_t dim, double init_value) : init_value_(init_value) {
  lambda1 = register_parameter("lambda1", torch::full({dim}, init_value));
}

void LayerScaleImpl::reset_parameters() {
  torch::NoGradGuard g;
  lambda1.fill_(init_value_);
}

torch::Tensor drop_path(const torch::Tensor& x, double prob, bool training) {
  if (prob <= 0.0 || !training) return x;
  std::vector<int64_t> shape(x.dim(), 1);
  shape[0] = x.size(0);
  double keep = 1.0 - prob;
  torch::Tensor mask = torch::empty(shape, x.options()).bernoulli_(keep);
  return x * mask / keep;
}

torch::Tensor activation(const torch::Tensor& x, const std::string& name) {
  if (name == "gelu") return torch::gelu(x);
  if (name == "gelu_new" || name == "gelu_pytorch_tanh") return torch::gelu(x, "tanh");
  if (name == "silu" || name == "swish") return torch::silu(x);
  if (name == "relu") return torch::relu(x);
  throw std::invalid_argument("unknown activation '" + name + "'");
}

void trunc_normal_(torch::Tensor& t, double std) {
  // Inverse-CDF sampling on [-2, 2], the same algorithm as torch.nn.init.trunc_normal_.
  torch::NoGradGuard g;
  auto cdf = [](double x) { return 0.5 * (1.0 + std::erf(x / std::sqrt(2.0))); };
  double lo = cdf(-2.0 / std), hi = cdf(2.0 / std);
  t.uniform_(2 * lo - 1, 2 * hi - 1).erfinv_().mul_(std * std::sqrt(2.0)).clamp_(-2.0, 2.0);
}

}  // namespace nepa
