#include "nepa/model/vit_nepa.h"

#include <torch/torch.h>

#include <cmath>
#include <stdexcept>

namespace nepa {

namespace {
std::string shape_str(const torch::Tensor& t) { return c10::str(t.sizes()); }

torch::nn::Linear linear(int64_t in, int64_t out, bool bias = true) {
  return torch::nn::Linear(torch::nn::LinearOptions(in, out).bias(bias));
}
}  // namespace

// ---- embeddings ---------------------------------------------------------------------------------------

namespace {
void check_token_ids(const torch::Tensor& ids, int64_t batch) {
  if (ids.dim() != 2 || ids.size(0) != batch || ids.scalar_type() != torch::kInt64 || ids.size(1) == 0)
    throw std::invalid_argument("token_ids has shape " + shape_str(ids) + " (" + c10::toString(ids.scalar_type()) +
                                "), expected int64 [" + std::to_string(batch) + ", K] with K >= 1");
  // No range check: it would be a host wait inside every step on a GPU, and gather refuses an index outside the
  // grid itself (an error on the CPU, a device-side assert on CUDA).
}
}  // namespace

NepaPatchEmbeddingsImpl::NepaPatchEmbeddingsImpl(const ModelConfig& c) {
  projection = register_module(
      "projection", torch::nn::Conv2d(torch::nn::Conv2dOptions(c.num_channels, c.hidden_size, c.patch_size)
                                          .stride(c.patch_size)));
}

torch::Tensor NepaPatchEmbeddingsImpl::forward(const torch::Tensor& pixel_values) {
  return projection->forward(pixel_values).flatten(2).transpose(1, 2);
}

NepaEmbeddingsImpl::NepaEmbeddingsImpl(const ModelConfig& c)
    : dropout_(c.hidden_dropout_prob), sincos_(c.use_sincos_pos_embed), patch_(c.patch_size) {
  if (c.use_cls_token) cls_token = register_parameter("cls_token", torch::zeros({1, 1, c.hidden_size}));
  if (c.use_mask_token) mask_token = register_parameter("mask_token", torch::zeros({1, 1, c.hidden_size}));
  patch_embeddings = register_module("patch_embeddings", NepaPatchEmbeddings(c));
  if (c.use_abs_pos_embed) {
    int64_t n = (c.image_size / c.patch_size) * (c.image_size / c.patch_size);
    position_embeddings =
        register_parameter("position_embeddings", torch::zeros({1, n + (c.use_cls_token ? 1 : 0), c.hidden_size}));
  }
}

const torch::Tensor& NepaEmbeddingsImpl::sincos_table(int64_t gh, int64_t gw, int64_t dim,
                                                     const torch::TensorOptions& options) {
  const bool fits = sincos_table_.defined() && sincos_gh_ == gh && sincos_gw_ == gw && sincos_table_.size(1) == dim &&
                    sincos_table_.device() == options.device() &&
                    sincos_table_.scalar_type() == c10::typeMetaToScalarType(options.dtype());
  if (!fits) {
    sincos_table_ = sincos_pos_embed_2d(gh, gw, dim, options);
    sincos_gh_ = gh;
    sincos_gw_ = gw;
  }
  return sincos_table_;
}

NepaEmbeddingsImpl::Output NepaEmbeddingsImpl::forward(const torch::Tensor& pixel_values,
                                                       const torch::Tensor& bool_masked_pos,
                                                       const torch::Tensor& token_ids) {
  torch::Tensor patches = patch_embeddings->forward(pixel_values);
  int64_t b = patches.size(0);
  const int64_t n = patches.size(1);
  if (token_ids.defined()) check_token_ids(token_ids, b);
  // The kept patches of a [B, N, D] tensor (or all of them).
  auto keep = [&](const torch::Tensor& t) {
    if (!token_ids.defined()) return t;
    return t.expand({b, n, t.size(2)}).gather(1, token_ids.unsqueeze(-1).expand({b, token_ids.size(1), t.size(2)}));
  };
  // Without a CLS token (AIM) the sequence is the patches alone.
  torch::Tensor cls = cls_token.defined() ? cls_token.expand({b, 1, cls_token.size(2)}).to(patches.dtype()) : torch::Tensor();
  Output out;
  out.input_embedding = cls.defined() ? torch::cat({cls, keep(patches)}, 1) : keep(patches);
  torch::Tensor x = patches;
  if (bool_masked_pos.defined()) {
    if (!mask_token.defined())
      throw std::invalid_argument("bool_masked_pos given but the model has no mask token (model.use_mask_token)");
    if (bool_masked_pos.dim() != 2 || bool_masked_pos.size(0) != b || bool_masked_pos.size(1) != patches.size(1))
      throw std::invalid_argument("bool_masked_pos has shape " + shape_str(bool_masked_pos) + ", expected [" +
                                  std::to_string(b) + ", " + std::to_string(patches.size(1)) + "]");
    torch::Tensor m = bool_masked_pos.unsqueeze(-1).to(patches.dtype());
    x = patches * (1 - m) + mask_token.to(patches.dtype()) * m;
  }
  if (sincos_) {
    // AIM adds the fixed embedding to the patch tokens before the trunk (aim-v1/aim/v1/torch/layers.py,
    // ViTPreprocessor.forward); a CLS token, if any, gets none (SinCosPosEmbed's zero row).
    int64_t gh = pixel_values.size(2) / patch_, gw = pixel_values.size(3) / patch_;
    x = x + sincos_table(gh, gw, x.size(2), x.options());
  }
  x = keep(x);
  if (position_embeddings.defined()) {
    const int64_t prefix = cls.defined() ? 1 : 0;
    if (position_embeddings.size(1) != n + prefix)
      throw std::invalid_argument("pixel_values " + shape_str(pixel_values) + " give " + std::to_string(n + prefix) +
                                  " tokens but the absolute position embedding has " +
                                  std::to_string(position_embeddings.size(1)));
    torch::Tensor pos = position_embeddings.to(x.dtype());
    x = x + keep(pos.narrow(1, prefix, n));
    if (cls.defined()) cls = cls + pos.narrow(1, 0, 1);
  }
  if (cls.defined()) x = torch::cat({cls, x}, 1);
  out.embeddings = torch::dropout(x, dropout_, is_training());
  return out;
}

// ---- attention ----------------------------------------------------------------------------------------

NepaSelfAttentionImpl::NepaSelfAttentionImpl(const ModelConfig& c)
    : heads_(c.num_attention_heads), head_dim_(c.head_dim()), dropout_(c.attention_probs_dropout_prob) {
  query = register_module("query", linear(c.hidden_size, c.hidden_size, c.qkv_bias));
  key = register_module("key", linear(c.hidden_size, c.hidden_size, c.qkv_bias));
  value = register_module("value", linear(c.hidden_size, c.hidden_size, c.qkv_bias));
  if (c.qk_norm) {
    q_norm = register_module("q_norm", LayerNorm(head_dim_, c.layer_norm_eps, c.qk_norm_affine, c.qk_norm_bias));
    k_norm = register_module("k_norm", LayerNorm(head_dim_, c.layer_norm_eps, c.qk_norm_affine, c.qk_norm_bias));
  }
}

torch::Tensor NepaSelfAttentionImpl::split_heads(const torch::Tensor& y) const {
  return y.view({y.size(0), y.size(1), heads_, head_dim_}).transpose(1, 2);
}

std::pair<torch::Tensor, torch::Tensor> NepaSelfAttentionImpl::project_qk(const torch::Tensor& x,
                                                                          const torch::Tensor& cos,
                                                                          const torch::Tensor& sin) {
  torch::Tensor q = split_heads(query->forward(x));
  torch::Tensor k = split_heads(key->forward(x));
  if (q_norm) {
    q = q_norm->forward(q);
    k = k_norm->forward(k);
  }
  if (cos.defined()) {
    // RoPE on the patch tokens only; the CLS token (and any prefix) stays unrotated. In float32. The tables are
    // [N, d], or [B, 1, K, d] for a token subset (each image's own rows).
    int64_t t = x.size(1), n = cos.size(-2), prefix = t - n;
    auto rotate = [&](const torch::Tensor& y) {
      torch::Tensor yf = y.to(torch::kFloat32);
      return torch::cat({yf.narrow(2, 0, prefix), apply_rope(yf.narrow(2, prefix, n), cos, sin)}, 2);
    };
    q = rotate(q);
    k = rotate(k);
  }
  return {q, k};
}

torch::Tensor NepaSelfAttentionImpl::probabilities(const torch::Tensor& q, const torch::Tensor& k, bool causal,
                                                   const torch::Tensor& attn_mask) const {
  // Softmax in float32, as the release's eager attention computes it.
  torch::Tensor scores = torch::matmul(q.to(torch::kFloat32), k.to(torch::kFloat32).transpose(-1, -2)) /
                         std::sqrt(static_cast<double>(head_dim_));
  if (attn_mask.defined()) {
    scores = scores.masked_fill(attn_mask.logical_not().unsqueeze(1), -std::numeric_limits<float>::infinity());
  } else if (causal) {
    int64_t t = q.size(2);
    torch::Tensor mask = torch::ones({t, t}, torch::TensorOptions().dtype(torch::kBool).device(q.device())).triu(1);
    scores = scores.masked_fill(mask, -std::numeric_limits<float>::infinity());
  }
  return torch::softmax(scores, -1);
}

torch::Tensor NepaSelfAttentionImpl::attention_probs(const torch::Tensor& x, const torch::Tensor& cos,
                                                     const torch::Tensor& sin, bool causal) {
  auto [q, k] = project_qk(x, cos, sin);
  return probabilities(q, k, causal);
}

std::pair<torch::Tensor, torch::Tensor> NepaSelfAttentionImpl::forward(const torch::Tensor& x,
                                                                       const torch::Tensor& cos,
                                                                       const torch::Tensor& sin, bool causal,
                                                                       bool need_probs,
                                                                       const torch::Tensor& attn_mask) {
  int64_t b = x.size(0), t = x.size(1);
  auto [q, k] = project_qk(x, cos, sin);
  torch::Tensor v = split_heads(value->forward(x));
  double p = is_training() ? dropout_ : 0.0;
  torch::Tensor context, probs;
  if (!need_probs && attn_mask.defined()) {
    if (attn_mask.dim() != 3 || attn_mask.size(0) != b || attn_mask.size(1) != t || attn_mask.size(2) != t ||
        attn_mask.scalar_type() != torch::kBool)
      throw std::invalid_argument("attn_mask has shape " + shape_str(attn_mask) + ", expected bool [" +
                                  std::to_string(b) + ", " + std::to_string(t) + ", " + std::to_string(t) + "]");
    // A boolean mask broadcast over the heads (true = attend), as the release's PrefixCausalAttention hands
    // F.scaled_dot_product_attention (aim-v1/aim/v1/torch/layers.py).
    context = torch::scaled_dot_product_attention(q.to(v.dtype()), k.to(v.dtype()), v, attn_mask.unsqueeze(1), p);
  } else if (!need_probs) {
    context = torch::scaled_dot_product_attention(q.to(v.dtype()), k.to(v.dtype()), v, {}, p, causal);
  } else {
    probs = probabilities(q, k, causal, attn_mask);
    context = torch::matmul(torch::dropout(probs, p, is_training()).to(v.dtype()), v);
  }
  return {context.transpose(1, 2).reshape({b, t, heads_ * head_dim_}), probs};
}

NepaSelfOutputImpl::NepaSelfOutputImpl(const ModelConfig& c) : dropout_(c.hidden_dropout_prob) {
  dense = register_module("dense", linear(c.hidden_size, c.hidden_size));
}

torch::Tensor NepaSelfOutputImpl::forward(const torch::Tensor& x) {
  return torch::dropout(dense->forward(x), dropout_, is_training());
}

NepaAttentionImpl::NepaAttentionImpl(const ModelConfig& c) {
  attention = register_module("attention", NepaSelfAttention(c));
  output = register_module("output", NepaSelfOutput(c));
}

// ---- MLP ----------------------------------------------------------------------------------------------

NepaIntermediateImpl::NepaIntermediateImpl(const ModelConfig& c) : act_(c.hidden_act) {
  up_proj = register_module("up_proj", linear(c.hidden_size, c.intermediate_size));
  if (c.use_gated_mlp) gate_proj = register_module("gate_proj", linear(c.hidden_size, c.intermediate_size));
}

torch::Tensor NepaIntermediateImpl::forward(const torch::Tensor& x) {
  if (gate_proj) return activation(gate_proj->forward(x), act_) * up_proj->forward(x);
  return activation(up_proj->forward(x), act_);
}

NepaOutputImpl::NepaOutputImpl(const ModelConfig& c) : dropout_(c.hidden_dropout_prob) {
  dense = register_module("dense", linear(c.intermediate_size, c.hidden_size));
  if (c.layerscale_value) layer_scale = register_module("layer_scale", LayerScale(c.hidden_size, *c.layerscale_value));
}

torch::Tensor NepaOutputImpl::forward(const torch::Tensor& x) {
  torch::Tensor y = torch::dropout(dense->forward(x), dropout_, is_training());
  return layer_scale ? layer_scale->forward(y) : y;
}

// ---- block / encoder ----------------------------------------------------------------------------------

NepaLayerImpl::NepaLayerImpl(const ModelConfig& c, double drop_path_prob) : drop_path_prob_(drop_path_prob) {
  layernorm_before = register_module("layernorm_before", LayerNorm(c.hidden_size, c.layer_norm_eps));
  attention = register_module("attention", NepaAttention(c));
  if (c.layerscale_value) layer_scale = register_module("layer_scale", LayerScale(c.hidden_size, *c.layerscale_value));
  layernorm_after = register_module("layernorm_after", LayerNorm(c.hidden_size, c.layer_norm_eps));
  intermediate = register_module("intermediate", NepaIntermediate(c));
  output = register_module("output", NepaOutput(c));
}

std::pair<torch::Tensor, torch::Tensor> NepaLayerImpl::forward(const torch::Tensor& h, const torch::Tensor& cos,
                                                               const torch::Tensor& sin, bool causal,
                                                               bool need_probs, const torch::Tensor& attn_mask) {
  auto [context, probs] =
      attention->attention->forward(layernorm_before->forward(h), cos, sin, causal, need_probs, attn_mask);
  torch::Tensor a = attention->output->forward(context);
  if (layer_scale) a = layer_scale->forward(a);
  torch::Tensor x = h + drop_path(a, drop_path_prob_, is_training());
  torch::Tensor m = output->forward(intermediate->forward(layernorm_after->forward(x)));
  return {x + drop_path(m, drop_path_prob_, is_training()), probs};
}

NepaEncoderImpl::NepaEncoderImpl(const ModelConfig& c) {
  layer = register_module("layer", torch::nn::ModuleList());
  for (int i = 0; i < c.num_hidden_layers; ++i) {
    // Stochastic depth rises linearly from 0 (first block) to drop_path_prob (last block).
    double p = c.num_hidden_layers > 1 ? c.drop_path_prob * i / (c.num_hidden_layers - 1) : 0.0;
    layer->push_back(NepaLayer(c, p));
  }
}

// ---- model --------------------------------------------------------------------------------------------

ViTNepaModelImpl::ViTNepaModelImpl(const ModelConfig& c) : config_(c) {
  validate(c, "model config");
  embeddings = register_module("embeddings", NepaEmbeddings(c));
  encoder = register_module("encoder", NepaEncoder(c));
  layernorm = register_module("layernorm", LayerNorm(c.hidden_size, c.layer_norm_eps));
  init_weights();
}

void ViTNepaModelImpl::init_weights(BackboneInit kind) {
  torch::NoGradGuard g;
  double std = config_.initializer_range;
  const bool xavier = kind == BackboneInit::kXavier;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      if (xavier)
        torch::nn::init::xavier_uniform_(lin->weight);
      else
        trunc_normal_(lin->weight, std);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* conv = m->as<torch::nn::Conv2d>()) {
      if (xavier) {
        // models_mae.py initialize_weights: the patch projection as the linear layer it is, fans out x (C p p).
        torch::Tensor flat = conv->weight.view({conv->weight.size(0), -1});
        torch::nn::init::xavier_uniform_(flat);
      } else {
        trunc_normal_(conv->weight, std);
      }
      if (conv->bias.defined()) conv->bias.zero_();
    } else if (auto* ln = m->as<LayerNorm>()) {
      ln->reset_parameters();
    } else if (auto* ls = m->as<LayerScale>()) {
      ls->reset_parameters();
    }
  }
  if (embeddings->cls_token.defined()) {
    if (xavier)
      embeddings->cls_token.normal_(0.0, 0.02);  // models_mae.py: normal_(std=.02)
    else
      trunc_normal_(embeddings->cls_token, std);
  }
  if (embeddings->position_embeddings.defined()) trunc_normal_(embeddings->position_embeddings, std);
  if (embeddings->mask_token.defined()) embeddings->mask_token.zero_();
  if (kind == BackboneInit::kDepthScaled) {
    // I-JEPA's VisionTransformer.fix_init_weight (src/models/vision_transformer.py): the residual branches'
    // output projections shrink with depth.
    for (size_t i = 0; i < encoder->layer->size(); ++i) {
      auto block = encoder->layer[i]->as<NepaLayer>();
      const double d = std::sqrt(2.0 * static_cast<double>(i + 1));
      block->attention->output->dense->weight.div_(d);
      block->output->dense->weight.div_(d);
    }
  }
}

std::pair<torch::Tensor, torch::Tensor> ViTNepaModelImpl::rope_tables(int64_t gh, int64_t gw,
                                                                      const torch::Device& device) {
  const ModelConfig& c = config_;
  if (!c.use_rope) return {};
  RopeAugment aug{c.pos_embed_shift, c.pos_embed_jitter, c.pos_embed_rescale};
  return rope_2d(gh, gw, c.head_dim(), c.rope_theta, device, is_training() ? &aug : nullptr,
                 c.rope_grid ? std::optional<int64_t>(*c.rope_grid) : std::nullopt);
}

NepaOutputs ViTNepaModelImpl::forward(const torch::Tensor& pixel_values, const ForwardOptions& options) {
  const ModelConfig& c = config_;
  if (pixel_values.dim() != 4 || pixel_values.size(1) != c.num_channels || pixel_values.size(2) % c.patch_size ||
      pixel_values.size(3) % c.patch_size || pixel_values.size(2) == 0 || pixel_values.size(3) == 0)
    throw std::invalid_argument("pixel_values has shape " + shape_str(pixel_values) + "; expected [B, " +
                                std::to_string(c.num_channels) + ", H, W] with H and W positive multiples of " +
                                "patch_size " + std::to_string(c.patch_size));
  int64_t gh = pixel_values.size(2) / c.patch_size, gw = pixel_values.size(3) / c.patch_size;

  auto emb = embeddings->forward(pixel_values, options.bool_masked_pos, options.token_ids);
  NepaOutputs out;
  out.input_embedding = emb.input_embedding;

  auto [cos, sin] = rope_tables(gh, gw, pixel_values.device());
  if (cos.defined() && options.token_ids.defined()) {
    cos = cos.index({options.token_ids}).unsqueeze(1);  // [B, 1, K, d]
    sin = sin.index({options.token_ids}).unsqueeze(1);
  }

  torch::Tensor h = emb.embeddings;
  if (options.output_hidden_states) out.hidden_states.push_back(h);
  for (const auto& block : *encoder->layer) {
    auto [next, probs] =
        block->as<NepaLayer>()->forward(h, cos, sin, c.is_causal, options.output_attentions, options.attn_mask);
    h = next;
    if (options.output_hidden_states) out.hidden_states.push_back(h);
    if (options.output_attentions) out.attentions.push_back(probs);
  }
  out.last_hidden_state = layernorm->forward(h);
  return out;
}

torch::Tensor sincos_pos_embed_2d(int64_t gh, int64_t gw, int64_t dim, const torch::TensorOptions& options) {
  if (dim % 4 != 0) throw std::invalid_argument("sincos_pos_embed_2d: dim " + std::to_string(dim) + " is not a multiple of 4");
  // In float64, then cast: the table is a constant, so its rounding should be the only one.
  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  const int64_t quarter = dim / 4;
  torch::Tensor omega = torch::pow(10000.0, -torch::arange(quarter, f64) / static_cast<double>(quarter));
  torch::Tensor cols = torch::arange(gw, f64).repeat({gh});                       // x of row-major token r*gw + c
  torch::Tensor rows = torch::arange(gh, f64).repeat_interleave(gw);              // y
  auto axis = [&](const torch::Tensor& pos) {
    torch::Tensor a = pos.unsqueeze(1) * omega.unsqueeze(0);
    return torch::cat({a.sin(), a.cos()}, 1);
  };
  return torch::cat({axis(cols), axis(rows)}, 1).to(options);
}

int64_t count_parameters(const torch::nn::Module& module) {
  int64_t n = 0;
  for (const auto& p : module.parameters()) n += p.numel();
  return n;
}

}  // namespace nepa
