// Small building blocks whose parameter names must match the Hugging Face checkpoints exactly.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <string>

namespace nepa {

// LayerNorm whose weight and bias exist independently: QK-Norm in the release has a weight but no bias
// (or neither), which torch::nn::LayerNorm cannot express without registering unused parameters.
class LayerNormImpl : public torch::nn::Module {
 public:
  LayerNormImpl(int64_t dim, double eps, bool affine = true, bool bias = true);
  torch::Tensor forward(const torch::Tensor& x);
  void reset_parameters();

  torch::Tensor weight, bias;  // undefined when absent
 private:
  int64_t dim_;
  double eps_;
};
TORCH_MODULE(LayerNorm);

// Per-channel scale initialised small so each residual branch starts near identity (CaiT).
class LayerScaleImpl : public torch::nn::Module {
 public:
  LayerScaleImpl(int64_t dim, double init_value);
  torch::Tensor forward(const torch::Tensor& x) { return x * lambda1; }
  void reset_parameters();

  torch::Tensor lambda1;
 private:
  double init_value_;
};
TORCH_MODULE(LayerScale);

// Stochastic depth: drops the whole residual branch per sample in training, rescaling the survivors.
torch::Tensor drop_path(const torch::Tensor& x, double prob, bool training);

// "gelu" (exact erf), "gelu_new"/"gelu_pytorch_tanh" (tanh approximation), "silu"/"swish", "relu".
torch::Tensor activation(const torch::Tensor& x, const std::string& name);

// Truncated normal as the release initialises (cut at +-2 absolute, which at std 0.02 never binds).
void trunc_normal_(torch::Tensor& t, double std);

}  // namespace nepa
