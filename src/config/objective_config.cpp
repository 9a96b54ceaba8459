// The objective section's checks (objective_config.h): the selected objective's, and that no other objective's
// key is set.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "checker.h"
#include "codec.h"
#include "nepa/config/config.h"

namespace nepa {
using namespace config_detail;

std::pair<int64_t, int64_t> ijepa_block_size(double u, const std::vector<double>& scale,
                                             const std::vector<double>& aspect, int64_t gh, int64_t gw) {
  const double s = scale.at(0) + u * (scale.at(1) - scale.at(0));
  const auto max_keep = static_cast<int64_t>(static_cast<double>(gh * gw) * s);
  const double ar = aspect.at(0) + u * (aspect.at(1) - aspect.at(0));
  // Python's round(): halves to even, as nearbyint in the default rounding mode.
  auto h = static_cast<int64_t>(std::nearbyint(std::sqrt(static_cast<double>(max_keep) * ar)));
  auto w = static_cast<int64_t>(std::nearbyint(std::sqrt(static_cast<double>(max_keep) / ar)));
  while (h >= gh) --h;
  while (w >= gw) --w;
  return {h, w};
}

ObjectiveKind objective_kind(const std::string& name, const std::string& file) {
  static const std::vector<std::pair<std::string, ObjectiveKind>> known = {
      {"nepa", ObjectiveKind::kNepa},
      {"aim", ObjectiveKind::kAim},
      {"mae", ObjectiveKind::kMae},
      {"ijepa", ObjectiveKind::kIjepa}};
  std::string names;
  for (const auto& [n, kind] : known) {
    if (n == name) return kind;
    names += (names.empty() ? "" : ", ") + n;
  }
  fail(file, "objective.name", "unknown objective '" + name + "' (" + names + ")");
}

BackboneInit backbone_init(const std::string& name, const std::string& file) {
  if (name == "hf") return BackboneInit::kHf;
  if (name == "xavier") return BackboneInit::kXavier;
  if (name == "depth_scaled") return BackboneInit::kDepthScaled;
  fail(file, "objective.backbone_init", "unknown initialisation '" + name + "' (hf, xavier, depth_scaled)");
}

namespace {

// Each field of a section as its YAML text, by key: how a value is compared with its default.
struct FieldTexts {
  std::map<std::string, std::string> text;
  template <class T>
  void operator()(const char* key, const T& field, const char*) {
    text[key] = encode_value(field);
  }
};

// A subsection of another objective than the selected one must hold its defaults: a key set there would be
// ignored. A restated default is accepted, so the effective config that to_yaml dumps (which lists every key of
// every objective) reloads.
template <class Section>
void reject_foreign_section(const Section& set, const std::string& section, const std::string& method,
                            const std::string& running, const Checker& c) {
  FieldTexts given, defaults;
  Section::visit(set, given);
  const Section d;
  Section::visit(d, defaults);
  for (const auto& [key, text] : given.text)
    c.require(text == defaults.text[key], "objective." + section + "." + key,
              "an " + method + " key, but objective.name is " + running + " (remove it or set objective.name: " +
                  section + ")");
}

void reject_foreign_objective_keys(const ObjectiveConfig& o, ObjectiveKind kind, const Checker& c) {
  if (kind != ObjectiveKind::kAim) reject_foreign_section(o.aim, "aim", "AIM", o.name, c);
  if (kind != ObjectiveKind::kMae) reject_foreign_section(o.mae, "mae", "MAE", o.name, c);
  if (kind != ObjectiveKind::kIjepa) reject_foreign_section(o.ijepa, "ijepa", "I-JEPA", o.name, c);
  if (kind != ObjectiveKind::kNepa) {
    const ObjectiveConfig d;
    c.require(o.shift == d.shift, "objective.shift", "a NEPA key that objective " + o.name + " does not use");
    c.require(o.stop_grad == d.stop_grad, "objective.stop_grad", "a NEPA key that objective " + o.name + " does not use");
    c.require(o.mask_ratio == d.mask_ratio, "objective.mask_ratio",
              "a NEPA key that objective " + o.name + " does not use");
  }
}

void validate_nepa(const Config& cfg, const Checker& c) {
  const ObjectiveConfig& o = cfg.objective;
  c.require(o.mask_ratio >= 0.0 && o.mask_ratio < 1.0, "objective.mask_ratio", "must be in [0, 1)");
  c.require(o.mask_ratio == 0.0 || cfg.model.use_mask_token, "objective.mask_ratio",
            "masking needs model.use_mask_token: true");
}

// AIM's trunk and head (NEPA-SPEC §8; the facts are cited in src/objective/aim.cpp).
void validate_aim(const Config& cfg, const Checker& c) {
  const AimConfig& a = cfg.objective.aim;
  const ModelConfig& m = cfg.model;
  const int n = (m.image_size / m.patch_size) * (m.image_size / m.patch_size);
  c.require(!m.use_cls_token, "model.use_cls_token",
            "AIM's trunk has no CLS token (aim-v1/aim/v1/torch/models.py: ViTPreprocessor(cls_token=False)): set false");
  c.require(!m.is_causal, "model.is_causal",
            "AIM pretrains under its prefix-causal mask and runs bidirectionally downstream (k-NN, export): set false");
  c.require(a.prefix_min >= 0 && a.prefix_min <= n - 1, "objective.aim.prefix_min",
            "must be in [0, num_patches - 1 = " + std::to_string(n - 1) + "]");
  const int hi = a.prefix_max.value_or(n - 1);
  c.require(hi >= a.prefix_min && hi <= n - 1, "objective.aim.prefix_max",
            "must be in [prefix_min, num_patches - 1 = " + std::to_string(n - 1) + "] or null, got " +
                std::to_string(hi));
  c.require(a.head_blocks >= 0, "objective.aim.head_blocks", "must be >= 0");
  c.require(a.head_width > 0, "objective.aim.head_width", "must be positive");
  c.require(!a.head_pos_embed || a.head_width % 4 == 0, "objective.aim.head_width",
            "the head's 2-D sin-cos position embedding needs a multiple of 4, got " + std::to_string(a.head_width));
  c.require(a.head_mlp_ratio > 0, "objective.aim.head_mlp_ratio", "must be positive");
  c.require(a.head_norm_eps > 0, "objective.aim.head_norm_eps", "must be positive");
  c.require(a.norm_pix_eps > 0, "objective.aim.norm_pix_eps", "must be positive");
}


// MAE's encoder and decoder (facebookresearch/mae models_mae.py; cited in src/objective/mae.cpp).
void validate_mae(const Config& cfg, const Checker& c) {
  const MaeConfig& e = cfg.objective.mae;
  const ModelConfig& m = cfg.model;
  const int n = (m.image_size / m.patch_size) * (m.image_size / m.patch_size);
  c.require(!m.is_causal, "model.is_causal", "MAE's encoder is bidirectional: set false");
  c.require(!m.use_mask_token, "model.use_mask_token",
            "MAE's mask token is the decoder's (objective.mae), the encoder drops hidden patches: set false");
  c.require(e.mask_ratio > 0.0 && e.mask_ratio < 1.0, "objective.mae.mask_ratio", "must be in (0, 1)");
  const int keep = static_cast<int>(n * (1.0 - e.mask_ratio));
  c.require(keep >= 1 && keep < n, "objective.mae.mask_ratio",
            "keeps int(" + std::to_string(n) + " x (1 - ratio)) = " + std::to_string(keep) +
                " patches; the encoder needs at least one and the loss at least one hidden");
  c.require(e.decoder_depth >= 0, "objective.mae.decoder_depth", "must be >= 0");
  c.require(e.decoder_width > 0 && e.decoder_width % 4 == 0, "objective.mae.decoder_width",
            "must be a positive multiple of 4 (the decoder's 2-D sin-cos positions), got " +
                std::to_string(e.decoder_width));
  c.require(e.decoder_heads > 0 && e.decoder_width % e.decoder_heads == 0, "objective.mae.decoder_heads",
            "must divide decoder_width " + std::to_string(e.decoder_width) + ", got " +
                std::to_string(e.decoder_heads));
  c.require(e.decoder_mlp_ratio > 0, "objective.mae.decoder_mlp_ratio", "must be positive");
  c.require(e.decoder_norm_eps > 0, "objective.mae.decoder_norm_eps", "must be positive");
  c.require(e.norm_pix_eps > 0, "objective.mae.norm_pix_eps", "must be positive");
}

// I-JEPA's blocks, encoder and predictor (facebookresearch/ijepa; cited in src/objective/ijepa.cpp).
void validate_ijepa(const Config& cfg, const Checker& c) {
  const IjepaConfig& j = cfg.objective.ijepa;
  const ModelConfig& m = cfg.model;
  const int side = m.image_size / m.patch_size, n = side * side;
  c.require(!m.is_causal, "model.is_causal", "I-JEPA's encoders are bidirectional: set false");
  c.require(!m.use_cls_token, "model.use_cls_token",
            "I-JEPA's encoder has no CLS token (src/models/vision_transformer.py): set false");
  c.require(!m.use_mask_token, "model.use_mask_token", "the mask token is the predictor's (objective.ijepa): set false");
  auto range = [&](const std::vector<double>& r, const char* key, double lo, double hi) {
    c.require(r.size() == 2 && r[0] > lo && r[0] <= r[1] && r[1] <= hi, std::string("objective.ijepa.") + key,
              "must be [min, max] with " + std::to_string(lo) + " < min <= max <= " + std::to_string(hi));
  };
  range(j.pred_mask_scale, "pred_mask_scale", 0.0, 1.0);
  range(j.enc_mask_scale, "enc_mask_scale", 0.0, 1.0);
  range(j.aspect_ratio, "aspect_ratio", 0.0, 1e9);
  c.require(j.num_pred_masks >= 1, "objective.ijepa.num_pred_masks", "must be >= 1");
  c.require(j.min_keep >= 0, "objective.ijepa.min_keep", "must be >= 0");
  // A block is redrawn until it holds more than min_keep patches, which never ends when it cannot: every block
  // size the draws can give (target and, with all its restrictions dropped, context) must hold more.
  if (j.pred_mask_scale.size() == 2 && j.aspect_ratio.size() == 2 && j.enc_mask_scale.size() == 2) {
    int64_t smallest = n;
    std::string which;
    for (int i = 0; i <= 1000; ++i) {
      const double u = i / 1000.0;
      const auto [th, tw] = ijepa_block_size(u, j.pred_mask_scale, j.aspect_ratio, side, side);
      const auto [ch, cw] = ijepa_block_size(u, j.enc_mask_scale, {1.0, 1.0}, side, side);
      if (th * tw < smallest) smallest = th * tw, which = "target " + std::to_string(th) + " x " + std::to_string(tw);
      if (ch * cw < smallest) smallest = ch * cw, which = "context " + std::to_string(ch) + " x " + std::to_string(cw);
    }
    c.require(smallest > j.min_keep, "objective.ijepa.min_keep",
              "the smallest block on the " + std::to_string(side) + " x " + std::to_string(side) + " grid (" + which +
                  ") holds " + std::to_string(smallest) + " patches; min_keep must be below that, got " +
                  std::to_string(j.min_keep));
  }
  c.require(j.predictor_depth >= 1, "objective.ijepa.predictor_depth", "must be >= 1");
  const int heads = j.predictor_heads.value_or(m.num_attention_heads);
  c.require(j.predictor_width > 0 && j.predictor_width % 4 == 0, "objective.ijepa.predictor_width",
            "must be a positive multiple of 4 (the predictor's 2-D sin-cos positions), got " +
                std::to_string(j.predictor_width));
  c.require(heads > 0 && j.predictor_width % heads == 0, "objective.ijepa.predictor_heads",
            std::to_string(heads) + " heads do not divide predictor_width " + std::to_string(j.predictor_width));
  c.require(!cfg.train.ema, "train.ema",
            "I-JEPA's target encoder is already an EMA of the trunk (exported as final/): set false");
  c.require(j.ema.size() == 2 && j.ema[0] >= 0.0 && j.ema[0] <= j.ema[1] && j.ema[1] <= 1.0, "objective.ijepa.ema",
            "must be [start, end] with 0 <= start <= end <= 1");
}

}  // namespace

namespace config_detail {

void validate_objective(const Config& cfg, const Checker& c) {
  const ObjectiveKind kind = objective_kind(cfg.objective.name, c.origin("objective.name"));
  reject_foreign_objective_keys(cfg.objective, kind, c);
  backbone_init(cfg.objective.backbone_init, c.origin("objective.backbone_init"));
  switch (kind) {
    case ObjectiveKind::kNepa: return validate_nepa(cfg, c);
    case ObjectiveKind::kAim: return validate_aim(cfg, c);
    case ObjectiveKind::kMae: return validate_mae(cfg, c);
    case ObjectiveKind::kIjepa: return validate_ijepa(cfg, c);
  }
}

}  // namespace config_detail
}  // namespace nepa
