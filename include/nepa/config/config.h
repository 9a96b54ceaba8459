// Typed experiment configuration. Every section is a plain struct whose static `visit` lists each field once with
// its YAML name and a one-line doc; decoding, encoding, --set overrides and the documented dump are all
// driven by that single list, so a field cannot be forgotten by one of them (the Marian lesson in STYLE.md).
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "nepa/config/objective_config.h"

namespace nepa {

// One clear line: "config error: <file>: <key.path>: <what>". Nothing starts after it.
class ConfigError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// The backbone (NEPA-SPEC §1). Field names are the Hugging Face config.json names so that a model section
// and an official config.json are interchangeable.
struct ModelConfig {
  int image_size = 224;
  int patch_size = 14;
  int num_channels = 3;
  int hidden_size = 768;
  int num_hidden_layers = 12;
  int num_attention_heads = 12;
  int intermediate_size = 3072;
  std::string hidden_act = "gelu";
  bool use_gated_mlp = false;
  bool qkv_bias = true;
  bool qk_norm = true;
  bool qk_norm_affine = false;
  bool qk_norm_bias = false;
  double layer_norm_eps = 1e-12;
  std::optional<double> layerscale_value = 1e-5;
  bool use_rope = true;
  double rope_theta = 100.0;
  std::optional<int> rope_grid;
  std::optional<double> pos_embed_rescale = 2.0;
  std::optional<double> pos_embed_shift;
  std::optional<double> pos_embed_jitter;
  bool use_abs_pos_embed = false;
  bool use_cls_token = true;
  bool use_sincos_pos_embed = false;
  bool use_mask_token = false;
  bool is_causal = true;
  double drop_path_prob = 0.0;
  double hidden_dropout_prob = 0.0;
  double attention_probs_dropout_prob = 0.0;
  double initializer_range = 0.02;
  int num_prompt_token = 0;

  int head_dim() const { return hidden_size / num_attention_heads; }

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("image_size", self.image_size, "input resolution in pixels (square); H and W must be multiples of patch_size");
    v("patch_size", self.patch_size, "side p of the square patches (Conv2d kernel = stride = p)");
    v("num_channels", self.num_channels, "input channels (3 = RGB; 1 for single-channel data)");
    v("hidden_size", self.hidden_size, "token width D");
    v("num_hidden_layers", self.num_hidden_layers, "number of transformer blocks L");
    v("num_attention_heads", self.num_attention_heads, "attention heads; D must be divisible by it");
    v("intermediate_size", self.intermediate_size, "MLP hidden width F");
    v("hidden_act", self.hidden_act, "MLP activation: gelu (exact erf), gelu_new (tanh approx), silu, relu");
    v("use_gated_mlp", self.use_gated_mlp, "SwiGLU-style MLP: act(gate_proj(x)) * up_proj(x)");
    v("qkv_bias", self.qkv_bias, "bias on the query/key/value projections");
    v("qk_norm", self.qk_norm, "LayerNorm over head_dim on q and k before RoPE (QK-Norm)");
    v("qk_norm_affine", self.qk_norm_affine, "QK-Norm has a learnable weight");
    v("qk_norm_bias", self.qk_norm_bias, "QK-Norm has a learnable bias (needs qk_norm_affine)");
    v("layer_norm_eps", self.layer_norm_eps, "epsilon of every LayerNorm");
    v("layerscale_value", self.layerscale_value, "initial LayerScale value; null = no LayerScale");
    v("use_rope", self.use_rope, "2-D rotary position embedding on the patch tokens (off only for the RoPE ablation)");
    v("rope_theta", self.rope_theta, "RoPE base: inv_freq = 1 / theta^(arange(0,1,4/head_dim))");
    v("rope_grid", self.rope_grid,
      "RoPE coordinates: null = normalised to [-1, 1] over the patch grid (the release); G = the spacing of a G x G "
      "grid at any resolution (e.g. 16: a 224 px pretraining on 14 px patches, used at 518 px for segmentation)");
    v("pos_embed_rescale", self.pos_embed_rescale, "training-only: scale RoPE coordinates by exp(U(-ln r, ln r)); null = off");
    v("pos_embed_shift", self.pos_embed_shift, "training-only: shift RoPE coordinates by U(-s, s) per axis; null = off");
    v("pos_embed_jitter", self.pos_embed_jitter, "training-only: scale y and x separately by log-uniform [1/j, j]; null = off");
    v("use_abs_pos_embed", self.use_abs_pos_embed, "learned absolute position embedding (RoPE ablation)");
    v("use_cls_token", self.use_cls_token, "prepend a learnable CLS token (NEPA); false = patch tokens only (AIM)");
    v("use_sincos_pos_embed", self.use_sincos_pos_embed,
      "fixed 2-D sin-cos position embedding added to the patch tokens (AIM's trunk; needs hidden_size % 4 == 0)");
    v("use_mask_token", self.use_mask_token, "learnable mask token for input-embedding masking");
    v("is_causal", self.is_causal, "causal attention (pretraining); false = bidirectional (fine-tuning)");
    v("drop_path_prob", self.drop_path_prob, "stochastic depth rate of the last block, rising linearly from 0");
    v("hidden_dropout_prob", self.hidden_dropout_prob,
      "dropout on the embeddings and, as the release, on the attention output projection and the MLP output (before "
      "LayerScale and the residual); 0 in every release");
    v("attention_probs_dropout_prob", self.attention_probs_dropout_prob, "dropout on attention probabilities");
    v("initializer_range", self.initializer_range, "std of the truncated-normal weight init");
    v("num_prompt_token", self.num_prompt_token, "prompt tokens of the release (0 in every release; others unsupported)");
  }
};


struct DataConfig {
  std::string dataset = "fashion_mnist";
  std::string root;
  std::string split = "train";
  std::string eval_split = "test";
  bool reduce_zero_label = true;
  int image_size = 224;
  int num_channels = 3;
  std::vector<double> mean = {0.5, 0.5, 0.5};
  std::vector<double> std = {0.5, 0.5, 0.5};
  std::vector<double> crop_scale = {0.08, 1.0};
  std::vector<double> crop_ratio = {3.0 / 4.0, 4.0 / 3.0};
  std::string interpolation = "bilinear";
  std::string eval_resize = "shorter_side";
  double hflip_prob = 0.5;
  int num_workers = 4;
  int prefetch_batches = 4;
  double max_bad_fraction = 0.001;
  std::string file_list;
  double eval_crop_pct = 0.875;
  int synthetic_size = 512;
  std::string auto_augment;
  double color_jitter = 0.0;
  double erase_prob = 0.0;
  int train_samples = 0;
  int subset_seed = 0;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("dataset", self.dataset, "fashion_mnist | image_folder | ade20k (root: the ADEChallengeData2016 folder) | synthetic");
    v("root", self.root, "dataset root (ImageFolder: root/<split>/<class>/<img>; fashion_mnist: IDX folder, empty = Debian path)");
    v("split", self.split, "training split (sub-folder or file prefix)");
    v("eval_split", self.eval_split, "evaluation split");
    v("reduce_zero_label", self.reduce_zero_label,
      "ade20k: annotation 0 ('other') is ignored (255) and class k becomes k - 1, as mmseg trains ADE20K");
    v("image_size", self.image_size, "side of the crops fed to the model");
    v("num_channels", self.num_channels, "3 = RGB (grayscale replicated); 1 = keep single channel");
    v("mean", self.mean, "per-channel normalisation mean");
    v("std", self.std, "per-channel normalisation std");
    v("crop_scale", self.crop_scale, "RandomResizedCrop area range [min, max]");
    v("crop_ratio", self.crop_ratio, "RandomResizedCrop aspect range [min, max]");
    v("interpolation", self.interpolation,
      "resize filter: bilinear | bicubic (antialiased when shrinking, as torchvision on PIL images) | nearest | area");
    v("hflip_prob", self.hflip_prob, "probability of a horizontal flip");
    v("num_workers", self.num_workers, "decode/augment threads");
    v("prefetch_batches", self.prefetch_batches, "batches prepared ahead of the training step");
    v("max_bad_fraction", self.max_bad_fraction, "unreadable images tolerated, as a fraction of the dataset, before the run stops");
    v("file_list", self.file_list, "image_folder: text file of '<class>/<file>' paths (relative to root/<split>) to use; empty = all");
    v("eval_crop_pct", self.eval_crop_pct,
      "evaluation: resize to int(image_size / eval_crop_pct) (see eval_resize), then centre crop image_size");
    v("eval_resize", self.eval_resize,
      "evaluation resize: shorter_side (Resize(int), aspect kept; the release's B recipe) | square (Resize((s, s)); "
      "the release's L recipe with crop_pct 0.95)");
    v("synthetic_size", self.synthetic_size, "synthetic: number of generated images per split");
    v("auto_augment", self.auto_augment, "training: RandAugment as timm names it, e.g. rand-m9-mstd0.5-inc1; empty = off");
    v("color_jitter", self.color_jitter, "training: brightness/contrast/saturation jitter strength, only without auto_augment");
    v("erase_prob", self.erase_prob, "training: probability of random erasing (one box, per-pixel noise) after normalising");
    v("train_samples", self.train_samples, "training split: a fixed random subset of this many images, class-balanced (label-fraction protocols); 0 = all");
    v("subset_seed", self.subset_seed, "seed of the train_samples subset (independent of train.seed, so seeds vary the training, not the labels)");
  }
};

struct OptimConfig {
  std::string name = "adamw";
  double base_lr = 3e-4;
  int lr_batch_reference = 256;
  std::vector<double> betas = {0.9, 0.95};
  double eps = 1e-8;
  double weight_decay = 0.05;
  std::optional<double> final_weight_decay;
  double grad_clip = 1.0;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("name", self.name, "optimizer: adamw");
    v("base_lr", self.base_lr, "learning rate per lr_batch_reference images: lr = base_lr * total_batch / reference");
    v("lr_batch_reference", self.lr_batch_reference, "batch size base_lr refers to");
    v("betas", self.betas, "AdamW (beta1, beta2)");
    v("eps", self.eps, "AdamW epsilon");
    v("weight_decay", self.weight_decay, "decoupled weight decay on matrices, kernels and the CLS token");
    v("final_weight_decay", self.final_weight_decay,
      "the decaying groups' weight decay moves from weight_decay to this value along a half cosine over the run "
      "(I-JEPA's CosineWDSchedule: 0.04 -> 0.4); null = weight_decay throughout");
    v("grad_clip", self.grad_clip,
      "max global L2 norm of the gradient, clipped once per optimizer step after the data-parallel average (as "
      "torch.nn.utils.clip_grad_norm_); 1.0 = the HF Trainer's max_grad_norm, which every release run uses; 0 = off");
  }
};

struct ScheduleConfig {
  std::string name = "cosine";
  int epochs = 1600;
  long long max_steps = 0;
  double warmup_fraction = 0.025;
  double warmup_start_lr = 0.0;
  double min_lr = 0.0;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("name", self.name,
      "lr schedule: cosine (linear warmup, then cosine to min_lr) | ijepa_cosine (the same, stepped as I-JEPA's "
      "WarmupCosineSchedule: its first update already one step in) | constant | llrd_cosine_warmup | llrd_cosine");
    v("epochs", self.epochs, "passes over the training set");
    v("max_steps", self.max_steps, "optimizer steps; 0 = derived from epochs");
    v("warmup_fraction", self.warmup_fraction, "fraction of the steps spent in linear warmup");
    v("warmup_start_lr", self.warmup_start_lr,
      "learning rate the linear warmup starts from (absolute, not scaled by the batch; I-JEPA's start_lr)");
    v("min_lr", self.min_lr, "final learning rate of the cosine");
  }
};

struct TrainConfig {
  std::string device = "cpu";
  std::string precision = "fp32";
  bool tf32 = false;
  int total_batch = 4096;
  int micro_batch = 64;
  long long seed = 1337;
  int threads = 0;
  std::string output_dir = "runs/nepa";
  long long checkpoint_every = 1000;
  int keep_last = 3;
  bool ema = true;
  double ema_decay = 0.9999;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("device", self.device, "cpu | cuda | cuda:N");
    v("precision", self.precision, "fp32 | bf16 (autocast; evaluations and k-NN run under it too)");
    v("tf32", self.tf32,
      "CUDA: float32 matmuls and convolutions in TF32 (faster on Ampere and later, ~3 digits); false = IEEE float32");
    v("total_batch", self.total_batch, "images per optimizer step over all processes");
    v("micro_batch", self.micro_batch, "images per forward/backward on one process (accumulation fills the rest)");
    v("seed", self.seed, "seed of weights, data order and augmentation");
    v("threads", self.threads, "intra-op CPU threads; 0 = all available cores");
    v("output_dir", self.output_dir, "run directory: checkpoints, metrics.jsonl, config.yaml");
    v("checkpoint_every", self.checkpoint_every, "optimizer steps between checkpoints");
    v("keep_last", self.keep_last, "checkpoints kept besides the final one");
    v("ema", self.ema,
      "keep an exponential moving average of all weights (checkpointed; pretraining exports it as final_ema/, "
      "fine-tuning evaluates it beside the weights)");
    v("ema_decay", self.ema_decay, "EMA decay per optimizer step (the average starts at the weights after step 1)");
  }
};

struct DistConfig {
  std::string backend = "auto";
  int timeout_s = 1800;
  double bucket_mb = 25.0;
  std::string master_addr;
  int master_port = 29500;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("backend", self.backend, "auto (nccl on CUDA, gloo on CPU) | nccl | gloo");
    v("timeout_s", self.timeout_s, "collective timeout; a dead rank ends the others after it");
    v("bucket_mb", self.bucket_mb, "gradient all-reduce bucket size in MB");
    v("master_addr", self.master_addr,
      "rendezvous host when the launcher does not set MASTER_ADDR (empty: SLURM's first node, else 127.0.0.1)");
    v("master_port", self.master_port, "rendezvous port when the launcher does not set MASTER_PORT");
  }
};

struct LogConfig {
  int log_every = 10;
  std::string level = "info";
  bool jsonl = true;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("log_every", self.log_every, "optimizer steps between progress lines");
    v("level", self.level, "trace | debug | info | warn | error");
    v("jsonl", self.jsonl, "append metrics to <output_dir>/metrics.jsonl");
  }
};

// Evaluation run by the training loop: k-NN top-1 on frozen features (cosine similarity, majority vote of the k
// nearest training images), mean-pooled patch tokens and the causal last token.
struct EvalConfig {
  int knn_k = 0;
  bool knn_at_init = false;
  long long knn_every = 0;
  int knn_train_samples = 0;
  int knn_eval_samples = 0;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("knn_k", self.knn_k, "neighbours of the k-NN readout (train split = memory, eval split = queries); 0 = no k-NN");
    v("knn_at_init", self.knn_at_init, "also evaluate the randomly initialised backbone before step 1 (baseline)");
    v("knn_every", self.knn_every, "optimizer steps between k-NN evaluations during training; 0 = only at the end");
    v("knn_train_samples", self.knn_train_samples, "training images used as the k-NN memory; 0 = the whole split");
    v("knn_eval_samples", self.knn_eval_samples, "evaluation images scored; 0 = the whole eval split");
  }
};

// Supervised fine-tuning and probes (NEPA-SPEC §4): head, layer-wise lr decay, label mixing, EMA.
struct FinetuneConfig {
  std::string init;
  std::string head = "finetune";
  int num_classes = 0;
  bool freeze_embed = true;
  double llrd = 0.65;
  std::optional<double> llrd_end;
  double head_lr = 1e-3;
  double label_smoothing = 0.1;
  double mixup_alpha = 0.8;
  double cutmix_alpha = 1.0;
  double mixup_prob = 1.0;
  double mixup_switch_prob = 0.5;
  std::string head_init = "zeros";
  bool init_ema = false;
  bool allow_missing = false;
  double eval_every_epochs = 1.0;
  int probe_blocks = 1;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("init", self.init,
      "weights to start from: a pretraining checkpoint, an HF model folder or model.safetensors; empty = random init");
    v("head", self.head,
      "finetune (mean-pooled patch tokens -> fc_norm -> classifier, all trained) | linear_probe (frozen backbone, "
      "mean-pooled -> BatchNorm -> classifier) | attentive_probe (frozen backbone, one query attending over the "
      "patch tokens -> classifier)");
    v("num_classes", self.num_classes, "classifier outputs; 0 = the training set's class count");
    v("freeze_embed", self.freeze_embed, "keep the patch embedding fixed");
    v("llrd", self.llrd, "layer-wise lr decay: block i gets llrd^(L-1-i), the embeddings llrd^L");
    v("llrd_end", self.llrd_end,
      "schedule llrd_cosine: the value llrd moves to along a half-cosine over the run; null = llrd stays fixed");
    v("head_lr", self.head_lr, "peak lr of the classifier and the backbone's final layernorm (absolute, not scaled)");
    v("label_smoothing", self.label_smoothing, "soft targets: 1 - s + s/C on the label, s/C elsewhere");
    v("mixup_alpha", self.mixup_alpha, "Mixup Beta(alpha, alpha); 0 = off");
    v("cutmix_alpha", self.cutmix_alpha, "CutMix Beta(alpha, alpha); 0 = off");
    v("mixup_prob", self.mixup_prob, "probability that a batch is mixed at all");
    v("mixup_switch_prob", self.mixup_switch_prob, "with both on: probability of CutMix instead of Mixup");
    v("head_init", self.head_init,
      "classifier init: zeros (weight and bias, as the release builds its -sft models) | trunc_normal (std "
      "model.initializer_range)");
    v("init_ema", self.init_ema,
      "start from the EMA weights (train.ema) of the training checkpoint named by init, as the release's --use_ema; "
      "an exported run starts from final_ema/ instead");
    v("allow_missing", self.allow_missing,
      "let init lack backbone tensors this model has (they train from random init); off, a missing one is an error "
      "(the head and QK-Norm weights new to fine-tuning are always allowed)");
    v("eval_every_epochs", self.eval_every_epochs, "evaluate every this many epochs (and at the end); 0 = end only");
    v("probe_blocks", self.probe_blocks, "probes: average the features of the last k blocks (1 = last_hidden_state)");
  }
};

// Semantic segmentation (nepa_seg): UPerNet on the backbone, trained and evaluated as mmsegmentation's BEiT/MAE
// ADE20K recipe. The crop fed to the model is data.image_size, the flip probability data.hflip_prob, the lr
// optim.base_lr x train.total_batch / optim.lr_batch_reference, the run schedule.max_steps iterations.
struct SegConfig {
  std::string init;
  bool init_ema = false;
  bool allow_missing = false;
  int num_classes = 0;
  std::vector<int> out_indices;
  int channels = 768;
  int aux_channels = 256;
  double aux_weight = 0.4;
  double dropout = 0.1;
  bool avg_non_ignore = false;
  int scale_long = 2048;
  int scale_short = 512;
  std::vector<double> ratio_range = {0.5, 2.0};
  double cat_max_ratio = 0.75;
  bool photometric = true;
  double layer_decay = 0.65;
  long long warmup_iters = 1500;
  double warmup_ratio = 1e-6;
  double poly_power = 1.0;
  std::string eval_mode = "slide";
  int eval_crop = 0;
  int eval_stride = 341;
  long long eval_every = 16000;
  int eval_samples = 0;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v("init", self.init,
      "backbone weights: a pretraining checkpoint, an HF model folder or model.safetensors; empty = random init");
    v("init_ema", self.init_ema, "start from the EMA weights of the training checkpoint named by init");
    v("allow_missing", self.allow_missing,
      "let init lack backbone tensors this model has (they train from random init); off, that is an error");
    v("num_classes", self.num_classes, "classes of the decode heads; 0 = the training set's (ADE20K: 150)");
    v("out_indices", self.out_indices,
      "4 blocks (from 0) whose patch tokens feed the pyramid, shallowest first (mmseg: 3/5/7/11 for B, 7/11/15/23 "
      "for L); required by nepa_seg");
    v("channels", self.channels, "UPerHead width (mmseg's BEiT-B config: 768)");
    v("aux_channels", self.aux_channels, "auxiliary FCN head width");
    v("aux_weight", self.aux_weight, "weight of the auxiliary head's loss");
    v("dropout", self.dropout, "Dropout2d before each head's classifier");
    v("avg_non_ignore", self.avg_non_ignore,
      "average the cross entropy over labelled pixels only; false = mmseg's default (and its BEiT/MAE configs): over "
      "all pixels of the crop, ignored ones counting 0");
    v("scale_long", self.scale_long, "training and test resize: long-edge limit at ratio 1 (keep-ratio)");
    v("scale_short", self.scale_short, "training and test resize: short-edge limit at ratio 1 (keep-ratio)");
    v("ratio_range", self.ratio_range, "training: the resize scale is multiplied by U[lo, hi)");
    v("cat_max_ratio", self.cat_max_ratio,
      "training: crops are re-drawn (up to 10 times) while one class covers this fraction or more; 1 = off");
    v("photometric", self.photometric, "training: mmseg's PhotoMetricDistortion (brightness, contrast, saturation, hue)");
    v("layer_decay", self.layer_decay, "BEiT layer-wise lr decay: lr x decay^(L + 1 - layer id); 1 = off");
    v("warmup_iters", self.warmup_iters, "iterations of linear warmup (schedule poly)");
    v("warmup_ratio", self.warmup_ratio, "the warmup starts at this fraction of the lr");
    v("poly_power", self.poly_power, "power of the poly decay to schedule.min_lr at schedule.max_steps");
    v("eval_mode", self.eval_mode, "slide (windows of eval_crop at eval_stride, logits averaged) | whole");
    v("eval_crop", self.eval_crop, "slide window side; 0 = data.image_size");
    v("eval_stride", self.eval_stride, "slide window stride (mmseg: 341 for crop 512)");
    v("eval_every", self.eval_every, "iterations between evaluations on data.eval_split (and at the end); 0 = end only");
    v("eval_samples", self.eval_samples, "evaluation images; 0 = the whole split (a figure over fewer is marked so)");
  }
};

struct Config {
  ModelConfig model;
  ObjectiveConfig objective;
  DataConfig data;
  OptimConfig optim;
  ScheduleConfig schedule;
  TrainConfig train;
  DistConfig dist;
  LogConfig log;
  EvalConfig eval;
  FinetuneConfig finetune;
  SegConfig seg;

  template <class Self, class V>
  static void visit(Self& self, V& v) {
    v.section("model", self.model, "the ViT backbone (Hugging Face vit_nepa names)");
    v.section("objective", self.objective, "what the model is trained to predict");
    v.section("data", self.data, "dataset and augmentation");
    v.section("optim", self.optim, "optimizer");
    v.section("schedule", self.schedule, "learning-rate schedule and run length");
    v.section("train", self.train, "devices, batch sizes, checkpoints");
    v.section("dist", self.dist, "multi-process data parallel");
    v.section("log", self.log, "progress logging");
    v.section("eval", self.eval, "evaluation during and after training");
    v.section("finetune", self.finetune, "supervised fine-tuning (nepa_finetune)");
    v.section("seg", self.seg, "semantic segmentation (nepa_seg)");
  }
};

// Where each key of a loaded config came from ("configs/a.yaml", "--set", or absent = default).
using ConfigOrigins = std::map<std::string, std::string>;

struct LoadedConfig {
  Config config;
  ConfigOrigins origins;
};

// Reads `path` (following `base:` chains, deep-merging maps), applies `overrides` of the form
// "section.key=value" in order, decodes strictly and validates. Throws ConfigError.
LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides = {});

// Same from YAML text (tests, embedded defaults). `name` stands in for the file name in messages.
LoadedConfig load_config_from_string(const std::string& yaml, const std::string& name = "<string>",
                                     const std::vector<std::string>& overrides = {});

// Throws ConfigError for impossible values (heads not dividing width, image not divisible by patch, ...).
void validate(const Config& config, const ConfigOrigins& origins = {});
void validate(const ModelConfig& model, const std::string& where, const std::string& prefix = "model.");

// Keys that may stay unset while a config is only inspected (--dry-run, nepa_tool config) but are needed to
// train: data.root for image_folder; and train.total_batch divisible by micro_batch x `world_size` processes.
// Throws ConfigError naming the key and the file that should set it.
void validate_for_training(const Config& config, const ConfigOrigins& origins = {}, int world_size = 1);

// The fully merged config as YAML, each key followed by its doc comment; load_config reads it back unchanged.
std::string to_yaml(const Config& config);
void save_config(const Config& config, const std::string& path);

bool operator==(const ModelConfig& a, const ModelConfig& b);

}  // namespace nepa
