// The objective section of the experiment config (config.h): which pretraining objective runs, and each
// objective's own subsection. Keys of a subsection other than the selected objective's are errors
// (src/config/objective_config.cpp), so a sweep cannot set a key that silently does nothing.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

namespace nepa {

// AIM (objective.name: aim; NEPA-SPEC §8): prefix-causal next-patch-pixel prediction. The release
// (apple/ml-aim, aim-v1/) ships the trunk and the attentive probe only; the prefix range, the pixel head and the
// loss below follow the paper's description ("Scalable Pre-training of Large Autoregressive Image Models" §3)
// and MAE's norm_pix_loss (facebookresearch/mae models_mae.py forward_loss), as src/objective/aim.cpp says.
struct AimConfig {
  int prefix_min = 1;
  std::optional<int> prefix_max;
  int head_blocks = 12;
  int head_width = 2048;
  int head_mlp_ratio = 4;
  bool head_pos_embed = true;
  double head_norm_eps = 1e-6;
  bool norm_pix_loss = true;
  double norm_pix_eps = 1e-6;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("prefix_min", self.prefix_min, "smallest prefix length s (drawn uniformly per image in [prefix_min, prefix_max])");
    v("prefix_max", self.prefix_max, "largest prefix length s; null = num_patches - 1 (at least one patch predicted)");
    v("head_blocks", self.head_blocks, "residual MLP blocks of the pixel head, applied to each token alone");
    v("head_width", self.head_width, "width of the pixel head (the trunk's tokens are projected to it)");
    v("head_mlp_ratio", self.head_mlp_ratio, "hidden width of each head block = head_mlp_ratio x head_width");
    v("head_pos_embed", self.head_pos_embed, "add the fixed 2-D sin-cos position embedding at the head's input");
    v("head_norm_eps", self.head_norm_eps, "epsilon of the head's LayerNorms");
    v("norm_pix_loss", self.norm_pix_loss, "targets normalised per patch (mean / unbiased var of its pixels); false = raw pixels");
    v("norm_pix_eps", self.norm_pix_eps, "target = (x - mean) / sqrt(var + eps)");
  }
};

// MAE (objective.name: mae; He et al., "Masked Autoencoders Are Scalable Vision Learners", official code
// facebookresearch/mae): the trunk encodes a random 25 % of the patches (bidirectionally, CLS kept), a light
// decoder sees them with mask tokens at the hidden positions and predicts the pixels of those; MSE on normalised
// pixels of the masked patches. Defaults are models_mae.py's (every size has the 8 x 512 decoder, 16 heads).
struct MaeConfig {
  double mask_ratio = 0.75;
  int decoder_depth = 8;
  int decoder_width = 512;
  int decoder_heads = 16;
  int decoder_mlp_ratio = 4;
  double decoder_norm_eps = 1e-6;
  bool norm_pix_loss = true;
  double norm_pix_eps = 1e-6;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("mask_ratio", self.mask_ratio, "fraction of patches hidden from the encoder; it keeps int(N x (1 - ratio))");
    v("decoder_depth", self.decoder_depth, "transformer blocks of the decoder (decoder_blocks.*)");
    v("decoder_width", self.decoder_width, "decoder token width (decoder_embed projects the encoder's tokens to it)");
    v("decoder_heads", self.decoder_heads, "attention heads of the decoder blocks");
    v("decoder_mlp_ratio", self.decoder_mlp_ratio, "hidden width of each decoder MLP = ratio x decoder_width");
    v("decoder_norm_eps", self.decoder_norm_eps, "epsilon of the decoder's LayerNorms");
    v("norm_pix_loss", self.norm_pix_loss,
      "targets normalised per patch (the release's --norm_pix_loss, used by its recipes); false = raw pixels");
    v("norm_pix_eps", self.norm_pix_eps, "target = (x - mean) / sqrt(var + eps)");
  }
};

// I-JEPA (objective.name: ijepa; Assran et al., "Self-Supervised Learning from Images with a Joint-Embedding
// Predictive Architecture", official code facebookresearch/ijepa): the trunk encodes one context block, an EMA
// copy of it (the target encoder) encodes the whole image, and a narrow predictor, fed the context tokens and mask
// tokens at the target blocks' positions, regresses the target encoder's layer-normed features there (smooth L1).
// Defaults are the release's (configs/in1k_vith14_ep300.yaml, src/masks/multiblock.py).
struct IjepaConfig {
  int num_pred_masks = 4;
  std::vector<double> pred_mask_scale = {0.15, 0.2};
  std::vector<double> enc_mask_scale = {0.85, 1.0};
  std::vector<double> aspect_ratio = {0.75, 1.5};
  int min_keep = 10;
  bool allow_overlap = false;
  int predictor_depth = 12;
  int predictor_width = 384;
  std::optional<int> predictor_heads;
  std::vector<double> ema = {0.996, 1.0};

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("num_pred_masks", self.num_pred_masks, "target blocks per image (the release's npred)");
    v("pred_mask_scale", self.pred_mask_scale, "target block area as a fraction of the image [min, max]");
    v("enc_mask_scale", self.enc_mask_scale, "context block area as a fraction of the image [min, max] (aspect 1)");
    v("aspect_ratio", self.aspect_ratio, "target block aspect ratio h / w [min, max]");
    v("min_keep", self.min_keep, "a block must hold more than this many patches (else it is drawn again)");
    v("allow_overlap", self.allow_overlap, "false = the context block excludes every target block");
    v("predictor_depth", self.predictor_depth, "transformer blocks of the predictor");
    v("predictor_width", self.predictor_width, "predictor token width (predictor_embed projects the context to it)");
    v("predictor_heads", self.predictor_heads, "attention heads of the predictor; null = the trunk's, as the release");
    v("ema", self.ema, "target encoder momentum [start, end], linear over the run's optimizer steps");
  }
};

// An I-JEPA block (h, w) of area about int(gh * gw * scale) and aspect h / w, with scale and aspect both read from
// the one uniform u (the release draws a single number for both, src/masks/multiblock.py), shrunk until it fits
// strictly inside the grid. Here because the config checks that every block can hold more than min_keep patches.
std::pair<int64_t, int64_t> ijepa_block_size(double u, const std::vector<double>& scale,
                                             const std::vector<double>& aspect, int64_t gh, int64_t gw);

// The training objective (NEPA-SPEC §2 and its ablations, and the sibling methods of §8).
struct ObjectiveConfig {
  std::string name = "nepa";
  bool shift = true;
  bool stop_grad = true;
  double mask_ratio = 0.0;
  std::string backbone_init = "hf";
  AimConfig aim;
  MaeConfig mae;
  IjepaConfig ijepa;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("name", self.name, "objective: nepa | aim | mae | ijepa");
    v("shift", self.shift, "nepa: position t predicts token t+1; false = same-position matching (ablation)");
    v("stop_grad", self.stop_grad, "nepa: stop the gradient through the targets (off collapses; ablation)");
    v("mask_ratio", self.mask_ratio, "nepa: fraction of patch embeddings replaced by the mask token; targets stay clean");
    v("backbone_init", self.backbone_init,
      "how the trunk's weights start: hf (truncated normal, std initializer_range, as ViTNepa and timm) | xavier "
      "(MAE's: xavier_uniform on every linear layer and on the patch projection seen as one, CLS normal 0.02) | "
      "depth_scaled (I-JEPA's: hf, then block i's attention output and MLP output divided by sqrt(2 i), i from 1)");
    v("aim", self.aim, "aim: prefix-causal next-patch-pixel prediction (only with name: aim)");
    v("mae", self.mae, "mae: masked autoencoder on normalised pixels (only with name: mae)");
    v("ijepa", self.ijepa, "ijepa: masked latent prediction against an EMA target encoder (only with name: ijepa)");
  }
};

// What objective.name selects (make_objective in objective/objective.h builds it). A new objective adds its
// value here, its name in objective_kind's table, and its own config subsection and checks
// (src/config/objective_config.cpp).
enum class ObjectiveKind { kNepa, kAim, kMae, kIjepa };

// Decodes objective.name; an unknown name throws ConfigError naming objective.name, `file` (where it was set)
// and the known names.
ObjectiveKind objective_kind(const std::string& name, const std::string& file = "the config");

// What objective.backbone_init selects (ViTNepaModelImpl::init_weights).
enum class BackboneInit { kHf, kXavier, kDepthScaled };
BackboneInit backbone_init(const std::string& name, const std::string& file = "the config");

}  // namespace nepa
