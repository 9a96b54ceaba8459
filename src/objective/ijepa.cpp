#include "nepa/objective/ijepa.h"

#include <ATen/ops/_foreach_add.h>
#include <ATen/ops/_foreach_mul.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <stdexcept>

#include "nepa/io/hf_checkpoint.h"
#include "nepa/objective/blocks.h"

// Where each I-JEPA fact comes from: facebookresearch/ijepa.
//   src/masks/multiblock.py  MaskCollator: per batch one uniform for the target block's scale and aspect together
//                            and one for the context block's (aspect 1); block h = round(sqrt(max_keep x aspect)),
//                            w = round(sqrt(max_keep / aspect)), max_keep = int(N x scale), shrunk below the grid
//                            side; top-left drawn with randint(0, side - size) (exclusive: a block never touches
//                            the last row or column); a block is redrawn until it holds more than min_keep
//                            patches; the context block is restricted to outside every target block, one
//                            restriction dropped after each 20 failures; all masks cut to the batch's smallest.
//   src/models/vision_transformer.py  the encoder: patch embedding + fixed sin-cos positions (no CLS), blocks,
//                            LayerNorm, on the masked tokens only (apply_masks); VisionTransformerPredictor:
//                            predictor_embed, + sin-cos positions of the context patches, mask_token + positions
//                            of each target block, context repeated per target block, blocks, predictor_norm,
//                            the target tokens through predictor_proj; trunc-normal init and fix_init_weight.
//   src/train.py            target = F.layer_norm(target_encoder(imgs)) at the target blocks; loss =
//                            F.smooth_l1_loss(pred, target); target <- m target + (1 - m) encoder after each step,
//                            m linear from ema[0] to ema[1] over iterations_per_epoch x epochs, the first step's
//                            m = ema[0].
// Not the release's: the masks come from a generator seeded by the run's global generator (the release seeds the
// sizes by an iteration counter and draws positions in its data-loader workers), so a resumed run replays them.

namespace nepa {

namespace {

int64_t uniform_below(std::mt19937_64& g, int64_t n) { return std::uniform_int_distribution<int64_t>(0, n - 1)(g); }

// A block of (h, w) at a random position: its patches in ascending order, restricted to the first
// `regions.size() - relaxed` of `regions` (1 = allowed), redrawn until more than min_keep remain. `relaxed` grows by
// one after every 20 failures, as the release does.
std::vector<int64_t> sample_block(std::mt19937_64& g, int64_t h, int64_t w, int64_t gh, int64_t gw,
                                  const std::vector<std::vector<uint8_t>>& regions, int min_keep, int64_t& top,
                                  int64_t& left) {
  size_t relaxed = 0;
  for (int attempt = 1;; ++attempt) {
    top = uniform_below(g, gh - h);
    left = uniform_below(g, gw - w);
    const size_t used = regions.size() > relaxed ? regions.size() - relaxed : 0;
    std::vector<int64_t> ids;
    for (int64_t r = top; r < top + h; ++r)
      for (int64_t c = left; c < left + w; ++c) {
        const int64_t i = r * gw + c;
        bool ok = true;
        for (size_t k = 0; k < used && ok; ++k) ok = regions[k][static_cast<size_t>(i)] != 0;
        if (ok) ids.push_back(i);
      }
    if (static_cast<int>(ids.size()) > min_keep) return ids;
    if (attempt % 20 == 0) ++relaxed;
    if (attempt == 100000)
      throw std::runtime_error("I-JEPA masks: no " + std::to_string(h) + " x " + std::to_string(w) + " block of the " +
                               std::to_string(gh) + " x " + std::to_string(gw) + " grid holds more than "
                               "objective.ijepa.min_keep = " + std::to_string(min_keep) + " patches");
  }
}

torch::Tensor cut_and_stack(const std::vector<std::vector<int64_t>>& rows, size_t keep) {
  torch::Tensor out = torch::empty({static_cast<int64_t>(rows.size()), static_cast<int64_t>(keep)}, torch::kInt64);
  auto a = out.accessor<int64_t, 2>();
  for (size_t b = 0; b < rows.size(); ++b)
    for (size_t j = 0; j < keep; ++j) a[static_cast<int64_t>(b)][static_cast<int64_t>(j)] = rows[b][j];
  return out;
}

}  // namespace

IjepaMasks ijepa_block_masks(int64_t batch, int64_t gh, int64_t gw, const IjepaConfig& config) {
  const int64_t seed = torch::randint(0, int64_t{1} << 62, {1}, torch::TensorOptions().dtype(torch::kInt64)).item<int64_t>();
  std::mt19937_64 g(static_cast<uint64_t>(seed));
  std::uniform_real_distribution<double> uniform(0.0, 1.0);
  IjepaMasks out;
  const double u_target = uniform(g), u_context = uniform(g);
  out.target_size = ijepa_block_size(u_target, config.pred_mask_scale, config.aspect_ratio, gh, gw);
  out.context_size = ijepa_block_size(u_context, config.enc_mask_scale, {1.0, 1.0}, gh, gw);
  const auto [th, tw] = out.target_size;
  const auto [ch, cw] = out.context_size;
  const size_t n = static_cast<size_t>(gh * gw);
  const size_t t_count = static_cast<size_t>(config.num_pred_masks);
  std::vector<std::vector<std::vector<int64_t>>> targets(t_count);
  std::vector<std::vector<int64_t>> contexts;
  size_t min_target = n, min_context = n;
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<std::vector<uint8_t>> outside;  // per target block: 1 outside it
    for (size_t t = 0; t < t_count; ++t) {
      int64_t top = 0, left = 0;
      std::vector<int64_t> ids = sample_block(g, th, tw, gh, gw, {}, config.min_keep, top, left);
      std::vector<uint8_t> o(n, 1);
      for (int64_t r = top; r < top + th; ++r)
        for (int64_t c = left; c < left + tw; ++c) o[static_cast<size_t>(r * gw + c)] = 0;
      outside.push_back(std::move(o));
      min_target = std::min(min_target, ids.size());
      targets[t].push_back(std::move(ids));
    }
    if (config.allow_overlap) outside.clear();
    int64_t top = 0, left = 0;
    contexts.push_back(sample_block(g, ch, cw, gh, gw, outside, config.min_keep, top, left));
    min_context = std::min(min_context, contexts.back().size());
  }
  out.context = cut_and_stack(contexts, min_context);
  for (const auto& rows : targets) out.targets.push_back(cut_and_stack(rows, min_target));
  return out;
}

ModelConfig ijepa_predictor_block_config(const IjepaConfig& ijepa, const ModelConfig& trunk) {
  return plain_block_config(ijepa.predictor_width, ijepa.predictor_heads.value_or(trunk.num_attention_heads),
                            4 * ijepa.predictor_width, ijepa.predictor_depth, 1e-6);
}

IjepaPredictorImpl::IjepaPredictorImpl(const IjepaConfig& ijepa, const ModelConfig& trunk) {
  const ModelConfig block = ijepa_predictor_block_config(ijepa, trunk);
  const int64_t w = ijepa.predictor_width;
  predictor_embed = register_module("predictor_embed", torch::nn::Linear(trunk.hidden_size, w));
  mask_token = register_parameter("mask_token", torch::zeros({1, 1, w}));
  predictor_blocks = register_module("predictor_blocks", torch::nn::ModuleList());
  for (int i = 0; i < ijepa.predictor_depth; ++i) predictor_blocks->push_back(NepaLayer(block, 0.0));
  predictor_norm = register_module("predictor_norm", LayerNorm(w, 1e-6));
  predictor_proj = register_module("predictor_proj", torch::nn::Linear(w, trunk.hidden_size));
  init_weights(trunk.initializer_range);
}

void IjepaPredictorImpl::init_weights(double std) {
  torch::NoGradGuard g;
  for (auto& m : modules(/*include_self=*/false)) {
    if (auto* lin = m->as<torch::nn::Linear>()) {
      trunc_normal_(lin->weight, std);
      if (lin->bias.defined()) lin->bias.zero_();
    } else if (auto* ln = m->as<LayerNorm>()) {
      ln->reset_parameters();
    }
  }
  trunc_normal_(mask_token, std);
  for (size_t i = 0; i < predictor_blocks->size(); ++i) {
    auto* layer = predictor_blocks[i]->as<NepaLayer>();
    const double d = std::sqrt(2.0 * static_cast<double>(i + 1));
    layer->attention->output->dense->weight.div_(d);
    layer->output->dense->weight.div_(d);
  }
}

torch::Tensor IjepaPredictorImpl::forward(const torch::Tensor& context, const torch::Tensor& context_ids,
                                          const std::vector<torch::Tensor>& target_ids, int64_t gh, int64_t gw) {
  if (target_ids.empty()) throw std::invalid_argument("IjepaPredictor: no target blocks");
  const int64_t kc = context.size(1), kt = target_ids.front().size(1), t = static_cast<int64_t>(target_ids.size());
  torch::Tensor x = predictor_embed->forward(context);
  torch::Tensor pos = sincos_pos_embed_2d(gh, gw, x.size(2), x.options());  // [N, W]
  x = x + pos.index({context_ids});
  torch::Tensor targets = torch::cat(target_ids, 0);  // [T * B, Kt], mask-major
  torch::Tensor queries = mask_token.to(x.dtype()) + pos.index({targets});
  torch::Tensor h = torch::cat({x.repeat({t, 1, 1}), queries}, 1);
  for (const auto& block : *predictor_blocks) h = block->as<NepaLayer>()->forward(h, {}, {}, false, false).first;
  return predictor_proj->forward(predictor_norm->forward(h).narrow(1, kc, kt));
}

IjepaLoss ijepa_forward_loss(ViTNepaModel& encoder, ViTNepaModel& target_encoder, IjepaPredictor& predictor,
                             const torch::Tensor& pixels, const IjepaMasks& masks) {
  const ModelConfig& c = encoder->config();
  if (c.is_causal || c.use_cls_token)
    throw std::invalid_argument("ijepa_forward_loss: I-JEPA's encoder is bidirectional and has no CLS token");
  const int64_t gh = pixels.size(2) / c.patch_size, gw = pixels.size(3) / c.patch_size;
  const auto device = pixels.device();
  std::vector<torch::Tensor> targets;
  for (const auto& t : masks.targets) targets.push_back(t.to(device));
  const torch::Tensor context = masks.context.to(device);
  const auto wide = pixels.scalar_type() == torch::kFloat64 ? torch::kFloat64 : torch::kFloat32;
  IjepaLoss out;
  {
    torch::NoGradGuard g;
    torch::Tensor h = target_encoder->forward(pixels).last_hidden_state.to(wide);
    h = torch::layer_norm(h, {h.size(2)});
    std::vector<torch::Tensor> at;
    for (const auto& ids : targets) at.push_back(h.gather(1, ids.unsqueeze(-1).expand({ids.size(0), ids.size(1), h.size(2)})));
    out.target = torch::cat(at, 0);
  }
  ForwardOptions o;
  o.token_ids = context;
  torch::Tensor z = encoder->forward(pixels, o).last_hidden_state;
  out.pred = predictor->forward(z, context, targets, gh, gw);
  out.loss = torch::smooth_l1_loss(out.pred.to(wide), out.target);
  return out;
}

IjepaObjective::IjepaObjective(const IjepaConfig& ijepa, const ModelConfig& model)
    : ijepa_(ijepa), model_(model), predictor_(IjepaPredictor(ijepa, model)), target_(ViTNepaModel(model)) {}

void IjepaObjective::attach(ViTNepaModel& backbone) {
  torch::NoGradGuard g;
  auto source = backbone->named_parameters();
  target_params_.clear();
  online_params_.clear();
  for (auto& p : target_->named_parameters()) {
    p.value().copy_(source[p.key()]);
    p.value().set_requires_grad(false);
    target_params_.push_back(p.value());
    online_params_.push_back(source[p.key()]);
  }
}

NamedModules IjepaObjective::modules() {
  return {{"ijepa_predictor", predictor_.ptr()}, {"target_encoder", target_.ptr()}};
}

ObjectiveOutput IjepaObjective::forward(ViTNepaModel& backbone, const torch::Tensor& pixels) {
  const int64_t gh = pixels.size(2) / model_.patch_size, gw = pixels.size(3) / model_.patch_size;
  IjepaMasks masks = ijepa_block_masks(pixels.size(0), gh, gw, ijepa_);
  const int64_t context = masks.context.size(1), target = masks.targets.front().size(1);
  masks.context = host_to_device(masks.context, pixels.device());
  for (auto& t : masks.targets) t = host_to_device(t, pixels.device());
  IjepaLoss l = ijepa_forward_loss(backbone, target_, predictor_, pixels, masks);
  auto on = torch::TensorOptions().device(pixels.device());
  return {l.loss,
          {{"context", torch::full({}, static_cast<double>(context), on)},
           {"target", torch::full({}, static_cast<double>(target), on)}}};
}

double IjepaObjective::momentum(const std::vector<double>& ema, int64_t step, int64_t total_steps) {
  return ema.at(0) + static_cast<double>(step - 1) * (ema.at(1) - ema.at(0)) / static_cast<double>(total_steps);
}

void IjepaObjective::after_step(int64_t step, const torch::Tensor& skipped) {
  if (total_steps_ <= 0 || target_params_.empty())
    throw std::logic_error("IjepaObjective::after_step before attach() and begin()");
  const double m = momentum(ijepa_.ema, step, total_steps_);
  torch::NoGradGuard g;
  const auto options = target_params_.front().options();
  // A skipped step (non-finite, its update undone) must leave the target as it was: momentum 1 then, on the
  // device, without reading the flag.
  const torch::Tensor keep =
      skipped.defined() ? skipped.to(options.dtype()) * (1.0 - m) + m : torch::full({}, m, options);
  const torch::Tensor take = 1.0 - keep;
  // target <- target * keep + online * take, as the release's mul_ then add_, in three foreach launches.
  at::_foreach_mul_(target_params_, keep);
  at::_foreach_add_(target_params_, at::_foreach_mul(online_params_, take));
}

void IjepaObjective::export_model(const std::string& dir, ViTNepaModel& /*backbone*/) {
  save_hf_model(dir, target_, HfModelConfig{model_, {}, {}, {}});
}

}  // namespace nepa
