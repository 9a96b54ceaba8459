#include "nepa/model/classifier.h"

#include <fmt/format.h>
#include <torch/torch.h>

#include <filesystem>

#include "nepa/io/safetensors.h"

namespace nepa {
namespace fs = std::filesystem;

ProbeHeadImpl::ProbeHeadImpl(const std::string& kind, int64_t dim, int64_t heads) : kind_(kind), heads_(heads) {
  norm = register_module("norm", torch::nn::BatchNorm1d(torch::nn::BatchNorm1dOptions(dim).affine(false).eps(1e-6)));
  if (kind == "attentive_probe") {
    query = register_parameter("query", torch::randn({1, 1, dim}) * 0.02);
    k = register_module("k", torch::nn::Linear(torch::nn::LinearOptions(dim, dim).bias(false)));
    v = register_module("v", torch::nn::Linear(torch::nn::LinearOptions(dim, dim).bias(false)));
  } else if (kind != "linear_probe") {
    throw std::invalid_argument("probe head: unknown kind " + kind);
  }
}

torch::Tensor ProbeHeadImpl::normalise(const torch::Tensor& x) {
  if (!is_training() || !sum_over_ranks_) return norm->forward(x);
  // SyncBN on features that carry no gradient (the backbone is frozen): the global batch's mean and biased
  // variance from summed moments normalise; the running statistics move as BatchNorm's (momentum, unbiased).
  const std::vector<int64_t> dims = x.dim() == 3 ? std::vector<int64_t>{0, 2} : std::vector<int64_t>{0};
  const torch::Tensor xd = x.detach().to(torch::kFloat64);
  const int64_t c = x.size(1);
  torch::Tensor moments = torch::cat({xd.sum(dims), (xd * xd).sum(dims),
                                      torch::full({1}, static_cast<double>(x.numel() / c), xd.options())});
  sum_over_ranks_(moments);
  const double count = moments[2 * c].item<double>();
  const torch::Tensor mean = moments.narrow(0, 0, c) / count;
  const torch::Tensor var = (moments.narrow(0, c, c) / count - mean * mean).clamp_min(0.0);
  const std::vector<int64_t> shape = x.dim() == 3 ? std::vector<int64_t>{1, c, 1} : std::vector<int64_t>{1, c};
  const double eps = norm->options.eps();
  torch::Tensor y = (x - mean.to(x.dtype()).view(shape)) / (var.to(x.dtype()).view(shape) + eps).sqrt();
  {
    torch::NoGradGuard no_grad;
    const double m = norm->options.momentum().value_or(0.1);
    norm->running_mean.mul_(1 - m).add_(mean.to(norm->running_mean.dtype()), m);
    norm->running_var.mul_(1 - m).add_((var * (count / std::max(count - 1, 1.0))).to(norm->running_var.dtype()), m);
    norm->num_batches_tracked.add_(1);
  }
  return y;
}

torch::Tensor ProbeHeadImpl::forward(const torch::Tensor& x) {
  if (kind_ == "linear_probe") return normalise(x.mean(1));
  const int64_t b = x.size(0), n = x.size(1), d = x.size(2), hd = d / heads_;
  torch::Tensor t = normalise(x.transpose(1, 2)).transpose(1, 2);  // per-channel over batch and tokens
  torch::Tensor q = query.expand({b, 1, d}).reshape({b, 1, heads_, hd}).transpose(1, 2);
  torch::Tensor kk = k->forward(t).reshape({b, n, heads_, hd}).transpose(1, 2);
  torch::Tensor vv = v->forward(t).reshape({b, n, heads_, hd}).transpose(1, 2);
  return torch::scaled_dot_product_attention(q, kk, vv).transpose(1, 2).reshape({b, d});
}

ViTNepaForImageClassificationImpl::ViTNepaForImageClassificationImpl(const ModelConfig& model, int64_t num_classes,
                                                                     const std::string& head, int probe_blocks)
    : num_classes_(num_classes), head_(head), probe_blocks_(probe_blocks) {
  if (num_classes <= 0) throw std::invalid_argument("classifier: num_classes must be positive");
  if (probe_blocks < 1 || probe_blocks > model.num_hidden_layers)
    throw std::invalid_argument("classifier: probe_blocks must be in [1, num_hidden_layers]");
  vit_nepa = register_module("vit_nepa", ViTNepaModel(model));
  if (head == "finetune") {
    fc_norm = register_module("fc_norm", LayerNorm(model.hidden_size, model.layer_norm_eps));
  } else {
    probe = register_module("probe", ProbeHead(head, model.hidden_size, model.num_attention_heads));
    for (auto& p : vit_nepa->parameters()) p.set_requires_grad(false);
    vit_nepa->eval();
  }
  classifier = register_module("classifier", torch::nn::Linear(model.hidden_size, num_classes));
  init_head("trunc_normal");
}

void ViTNepaForImageClassificationImpl::init_head(const std::string& scheme) {
  torch::NoGradGuard no_grad;
  if (scheme == "zeros") {
    classifier->weight.zero_();
  } else if (scheme == "trunc_normal") {
    trunc_normal_(classifier->weight, vit_nepa->config().initializer_range);
  } else {
    throw std::invalid_argument("classifier: unknown head init '" + scheme + "' (zeros, trunc_normal)");
  }
  classifier->bias.zero_();
}

void ViTNepaForImageClassificationImpl::train(bool on) {
  torch::nn::Module::train(on);
  if (probe) vit_nepa->eval();  // a frozen feature extractor: no drop path, no RoPE rescaling
}

torch::Tensor ViTNepaForImageClassificationImpl::features(const torch::Tensor& pixel_values) {
  if (!probe) {
    torch::Tensor h = vit_nepa->forward(pixel_values).last_hidden_state;
    return fc_norm->forward(vit_nepa->patch_tokens(h).mean(1));
  }
  torch::Tensor tokens;
  {
    torch::NoGradGuard no_grad;
    ForwardOptions opts;
    opts.output_hidden_states = probe_blocks_ > 1;
    NepaOutputs out = vit_nepa->forward(pixel_values, opts);
    if (probe_blocks_ == 1) {
      tokens = out.last_hidden_state;
    } else {
      const auto& hs = out.hidden_states;  // embeddings, then each block's output
      for (int j = 0; j < probe_blocks_; ++j) {
        torch::Tensor t = vit_nepa->layernorm->forward(hs[hs.size() - 1 - j]);
        tokens = tokens.defined() ? tokens + t : t;
      }
      tokens = tokens / static_cast<double>(probe_blocks_);
    }
    tokens = vit_nepa->patch_tokens(tokens).to(torch::kFloat32);
  }
  return probe->forward(tokens);
}

std::string head_of(const std::map<std::string, torch::Tensor>& tensors) {
  if (tensors.count("probe.query")) return "attentive_probe";
  if (tensors.count("probe.norm.running_mean")) return "linear_probe";
  return "finetune";
}

torch::Tensor ViTNepaForImageClassificationImpl::forward(const torch::Tensor& pixel_values) {
  return classifier->forward(features(pixel_values));
}

std::map<std::string, torch::Tensor> read_classifier_weights(const std::string& path_in, bool ema,
                                                             const std::string& key_name) {
  std::string path = path_in;
  if (fs::is_directory(path)) path = (fs::path(path) / "model.safetensors").string();
  if (!fs::exists(path)) throw std::runtime_error(key_name + ": " + path + " does not exist");
  std::map<std::string, torch::Tensor> file = load_safetensors(path), out;
  bool training_checkpoint = false;
  for (const auto& [k, v] : file)
    if (k.rfind("model.", 0) == 0) training_checkpoint = true;
  if (ema && !training_checkpoint)
    throw std::runtime_error(key_name + "_ema: " + path + " is an exported model, not a training checkpoint; "
                             "a run's EMA export is the folder final_ema/ (point " + key_name + " there, init_ema false)");
  const std::string prefix = ema ? "extra.ema." : "model.";
  for (const auto& [k, v] : file) {
    std::string key = k;
    if (training_checkpoint) {
      if (key.rfind(prefix, 0) != 0) continue;  // optimizer moments, generator states, the other weights
      key = key.substr(prefix.size());
    }
    // A backbone saved on its own (a pretraining checkpoint, a bare ViTNepaModel file) has no prefix.
    const bool head =
        key.rfind("fc_norm.", 0) == 0 || key.rfind("classifier.", 0) == 0 || key.rfind("probe.", 0) == 0;
    if (!head && key.rfind(kBackbonePrefix, 0) != 0) key = kBackbonePrefix + key;
    out[key] = v;
  }
  if (out.empty())
    throw std::runtime_error(ema ? key_name + "_ema: " + path + " holds no EMA weights (its run had train.ema off)"
                                 : key_name + ": " + path + " holds no model tensors");
  return out;
}

ClassifierInit load_classifier_init(ViTNepaForImageClassification& model, const std::string& path, bool ema,
                                    bool allow_missing) {
  const auto tensors = read_classifier_weights(path, ema);
  // Check before loading: nothing changes in the model when the file does not fit.
  bool source_has_qk_norm_weights = false;
  for (const auto& [k, v] : tensors)
    if (k.find(".q_norm.") != std::string::npos || k.find(".k_norm.") != std::string::npos)
      source_has_qk_norm_weights = true;
  ClassifierInit init;
  int64_t backbone_total = 0;
  for (const auto& [k, v] : state_dict(*model)) {
    const bool backbone = k.rfind(kBackbonePrefix, 0) == 0;
    backbone_total += backbone;
    if (tensors.count(k)) continue;
    const bool qk_norm = k.find(".q_norm.") != std::string::npos || k.find(".k_norm.") != std::string::npos;
    if (!backbone || (qk_norm && !source_has_qk_norm_weights)) init.expected_new.push_back(k);
    else init.missing_backbone.push_back(k);
  }
  if (!init.missing_backbone.empty() && !allow_missing) {
    std::string first;
    for (size_t i = 0; i < init.missing_backbone.size() && i < 3; ++i) first += (i ? ", " : "") + init.missing_backbone[i];
    throw std::runtime_error(fmt::format(
        "finetune.init: {} lacks {} of the {} backbone tensors this model needs (first: {}{}): another architecture "
        "than model.* describes, or not a NEPA backbone; finetune.allow_missing: true trains them from random init",
        path, init.missing_backbone.size(), backbone_total, first, init.missing_backbone.size() > 3 ? ", ..." : ""));
  }
  init.report = load_state_dict(*model, tensors, /*strict=*/false, path);
  if (!init.report.mismatched.empty())
    throw std::runtime_error(path + ": tensors do not fit the model:\n" + init.report.summary());
  return init;
}

void save_hf_classifier(const std::string& dir, ViTNepaForImageClassification& model,
                        const std::vector<std::string>& labels) {
  HfModelConfig hf;
  hf.model = model->vit_nepa->config();
  hf.architectures = {"ViTNepaForImageClassification"};
  hf.id2label = labels;
  if (hf.id2label.empty())
    for (int64_t c = 0; c < model->num_classes(); ++c) hf.id2label.push_back(std::to_string(c));
  std::map<std::string, torch::Tensor> head;
  for (const auto& [name, t] : state_dict(*model))
    if (name.rfind("fc_norm.", 0) == 0 || name.rfind("classifier.", 0) == 0 || name.rfind("probe.", 0) == 0)
      head[name] = t;
  save_hf_model(dir, model->vit_nepa, hf, head);
}

}  // namespace nepa
