// The NEPA backbone (NEPA-SPEC §1): a pre-norm ViT with QK-Norm, 2-D RoPE on the patch tokens, LayerScale
// and causal attention. The same trunk serves AIM (NEPA-SPEC §8) with two switches, no CLS token and fixed 2-D
// sin-cos position embeddings, and an explicit attention mask (its prefix-causal one) in ForwardOptions. Submodules carry the Hugging Face names (NEPA-SPEC §7), so named_parameters()
// equals the checkpoint keys without the `vit_nepa.` prefix.
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/modules/container/modulelist.h>
#include <torch/nn/modules/conv.h>
#include <torch/nn/modules/linear.h>
#include <torch/nn/pimpl.h>

#include <optional>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/model/layers.h"
#include "nepa/model/rope.h"

namespace nepa {

class NepaPatchEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit NepaPatchEmbeddingsImpl(const ModelConfig& c);
  torch::Tensor forward(const torch::Tensor& pixel_values);  // [B,C,H,W] -> [B, N, D], row-major patches
  torch::nn::Conv2d projection{nullptr};
};
TORCH_MODULE(NepaPatchEmbeddings);

class NepaEmbeddingsImpl : public torch::nn::Module {
 public:
  explicit NepaEmbeddingsImpl(const ModelConfig& c);
  struct Output {
    torch::Tensor embeddings;       // what the encoder sees: masked, position-embedded, dropped out
    torch::Tensor input_embedding;  // [CLS +] patch embeddings before any of that: the NEPA targets
  };
  // bool_masked_pos [B, N] (true = replace that patch by the mask token) is optional. token_ids [B, K] int64
  // (optional) keeps only those patches, in that order, each with its own position (sin-cos or learned); the
  // CLS token stays in front. input_embedding is then [CLS +] the kept patches too.
  Output forward(const torch::Tensor& pixel_values, const torch::Tensor& bool_masked_pos = {},
                 const torch::Tensor& token_ids = {});

  torch::Tensor cls_token;            // [1, 1, D], only with use_cls_token
  torch::Tensor mask_token;           // [1, 1, D], only with use_mask_token
  torch::Tensor position_embeddings;  // [1, (1+)N, D], only with use_abs_pos_embed
  NepaPatchEmbeddings patch_embeddings{nullptr};

 private:
  // The fixed sin-cos table for this grid, device and dtype, made once: it is a constant, and a table computed
  // on the host every forward would be a blocking copy to the GPU on every step.
  const torch::Tensor& sincos_table(int64_t gh, int64_t gw, int64_t dim, const torch::TensorOptions& options);

  double dropout_;
  bool sincos_;
  int64_t patch_;
  torch::Tensor sincos_table_;  // not a buffer: no checkpoint tensor, as the release keeps none
  int64_t sincos_gh_ = 0, sincos_gw_ = 0;  // its grid (a 4x6 and a 6x4 grid have tables of one shape)
};
TORCH_MODULE(NepaEmbeddings);

class NepaSelfAttentionImpl : public torch::nn::Module {
 public:
  explicit NepaSelfAttentionImpl(const ModelConfig& c);
  // x [B, T, D]; rope = (cos, sin) [N, d] applied to the last N tokens, or undefined tensors for none.
  // attn_mask [B, T, T] bool (true = query may attend to key), when defined, replaces `causal` (AIM's
  // prefix-causal mask); undefined, the path is exactly the causal / bidirectional one.
  // Returns the context [B, T, D] and, when need_probs, the attention probabilities [B, heads, T, T].
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& x, const torch::Tensor& cos,
                                                  const torch::Tensor& sin, bool causal, bool need_probs,
                                                  const torch::Tensor& attn_mask = {});
  // The probabilities softmax(q k^T / sqrt(d), causal mask) [B, heads, T, T] in float32 that forward attends
  // with, from the same q and k (projections, QK-Norm, RoPE): SDPA computes them but does not return them, and
  // the attention maps (eval/attention_maps.h) need one layer's without switching the model to the eager path.
  torch::Tensor attention_probs(const torch::Tensor& x, const torch::Tensor& cos, const torch::Tensor& sin,
                                bool causal);

  torch::nn::Linear query{nullptr}, key{nullptr}, value{nullptr};
  LayerNorm q_norm{nullptr}, k_norm{nullptr};  // present only with qk_norm (parameters only when affine)

 private:
  torch::Tensor split_heads(const torch::Tensor& y) const;  // [B, T, D] -> [B, heads, T, d]
  // q and k as attention compares them: split into heads, QK-Norm, RoPE on the last cos.size(0) tokens.
  std::pair<torch::Tensor, torch::Tensor> project_qk(const torch::Tensor& x, const torch::Tensor& cos,
                                                     const torch::Tensor& sin);
  torch::Tensor probabilities(const torch::Tensor& q, const torch::Tensor& k, bool causal,
                              const torch::Tensor& attn_mask = {}) const;

  int64_t heads_, head_dim_;
  double dropout_;
};
TORCH_MODULE(NepaSelfAttention);

// The attention output projection, then dropout with hidden_dropout_prob (the release's ViTNepaSelfOutput).
class NepaSelfOutputImpl : public torch::nn::Module {
 public:
  explicit NepaSelfOutputImpl(const ModelConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear dense{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(NepaSelfOutput);

class NepaAttentionImpl : public torch::nn::Module {
 public:
  explicit NepaAttentionImpl(const ModelConfig& c);
  NepaSelfAttention attention{nullptr};
  NepaSelfOutput output{nullptr};
};
TORCH_MODULE(NepaAttention);

class NepaIntermediateImpl : public torch::nn::Module {
 public:
  explicit NepaIntermediateImpl(const ModelConfig& c);
  torch::Tensor forward(const torch::Tensor& x);
  torch::nn::Linear up_proj{nullptr}, gate_proj{nullptr};  // gate_proj only when use_gated_mlp

 private:
  std::string act_;
};
TORCH_MODULE(NepaIntermediate);

class NepaOutputImpl : public torch::nn::Module {
 public:
  explicit NepaOutputImpl(const ModelConfig& c);
  torch::Tensor forward(const torch::Tensor& x);  // dense, dropout (hidden_dropout_prob), then LayerScale 2
  torch::nn::Linear dense{nullptr};
  LayerScale layer_scale{nullptr};

 private:
  double dropout_;
};
TORCH_MODULE(NepaOutput);

// h = h + DropPath(LS1 * Attn(LN_before(h))); h = h + DropPath(LS2 * MLP(LN_after(h)))
class NepaLayerImpl : public torch::nn::Module {
 public:
  NepaLayerImpl(const ModelConfig& c, double drop_path_prob);
  std::pair<torch::Tensor, torch::Tensor> forward(const torch::Tensor& h, const torch::Tensor& cos,
                                                  const torch::Tensor& sin, bool causal, bool need_probs,
                                                  const torch::Tensor& attn_mask = {});

  LayerNorm layernorm_before{nullptr};
  NepaAttention attention{nullptr};
  LayerScale layer_scale{nullptr};
  LayerNorm layernorm_after{nullptr};
  NepaIntermediate intermediate{nullptr};
  NepaOutput output{nullptr};

 private:
  double drop_path_prob_;
};
TORCH_MODULE(NepaLayer);

class NepaEncoderImpl : public torch::nn::Module {
 public:
  explicit NepaEncoderImpl(const ModelConfig& c);
  torch::nn::ModuleList layer{nullptr};
};
TORCH_MODULE(NepaEncoder);

struct ForwardOptions {
  torch::Tensor bool_masked_pos;   // [B, N] bool, optional: input-embedding masking
  bool output_hidden_states = false;
  bool output_attentions = false;  // forces the eager attention path
  torch::Tensor attn_mask;         // [B, T, T] bool, optional: true = may attend; replaces is_causal (AIM)
  // [B, K] int64, optional: encode only these patches (row-major indices into the grid, K equal for the batch,
  // any order; MAE's visible patches, I-JEPA's context). Each keeps its position: the sin-cos or learned
  // embedding of its index and its own RoPE row. T becomes K (+ CLS).
  torch::Tensor token_ids;
};

struct NepaOutputs {
  torch::Tensor last_hidden_state;          // [B, T, D] after the final LayerNorm
  torch::Tensor input_embedding;            // [B, T, D] clean [CLS +] patch embeddings (NEPA targets)
  std::vector<torch::Tensor> hidden_states; // embeddings output, then every block's output (L+1 tensors)
  std::vector<torch::Tensor> attentions;    // per block [B, heads, T, T]
};

class ViTNepaModelImpl : public torch::nn::Module {
 public:
  explicit ViTNepaModelImpl(const ModelConfig& c);
  NepaOutputs forward(const torch::Tensor& pixel_values, const ForwardOptions& options = {});

  // Causal for pretraining, bidirectional for fine-tuning; the weights are the same.
  void set_causal(bool causal) { config_.is_causal = causal; }
  bool is_causal() const { return config_.is_causal; }
  // The RoPE (cos, sin) tables forward uses for a gh x gw patch grid (undefined without use_rope); in training
  // mode each call draws a new coordinate augmentation.
  std::pair<torch::Tensor, torch::Tensor> rope_tables(int64_t gh, int64_t gw, const torch::Device& device);
  const ModelConfig& config() const { return config_; }
  // The patch tokens of a [B, T, D] sequence this model produced: without the CLS token in front, when the model
  // has one (NEPA), the whole sequence when it has none (AIM's trunk). Pooled readouts (k-NN, probes, the
  // fine-tuning head) average these.
  torch::Tensor patch_tokens(const torch::Tensor& tokens) const {
    const int64_t prefix = config_.use_cls_token ? 1 : 0;
    return tokens.narrow(1, prefix, tokens.size(1) - prefix);
  }
  // Re-draws every weight as the release initialises it (NEPA-SPEC §1 "Init"), or as MAE's or I-JEPA's release
  // initialises its ViT (objective.backbone_init); seeded by the global generator. The constructor ends with kHf.
  void init_weights(BackboneInit kind = BackboneInit::kHf);

  NepaEmbeddings embeddings{nullptr};
  NepaEncoder encoder{nullptr};
  LayerNorm layernorm{nullptr};

 private:
  ModelConfig config_;
};
TORCH_MODULE(ViTNepaModel);

// The fixed 2-D sin-cos position embedding [gh * gw, dim] of a row-major patch grid, as AIM's SinCosPosEmbed
// (aim-v1/aim/v1/torch/layers.py, from MAE's pos_embed.py): per token [sin(x w), cos(x w), sin(y w), cos(y w)]
// with x the column, y the row and w_i = 10000^(-i / (dim / 4)), i < dim / 4. dim must be a multiple of 4.
torch::Tensor sincos_pos_embed_2d(int64_t gh, int64_t gw, int64_t dim, const torch::TensorOptions& options);

// Number of parameters (all of them, trainable or not).
int64_t count_parameters(const torch::nn::Module& module);

}  // namespace nepa
