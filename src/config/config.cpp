#include "nepa/config/config.h"

#include "nepa/data/randaugment.h"

#include <yaml-cpp/yaml.h>

#include <cerrno>
#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>

#include "checker.h"
#include "codec.h"
#include "nepa/config/fingerprint.h"
#include "nepa/io/atomic_file.h"

namespace nepa {
namespace fs = std::filesystem;
using namespace config_detail;

namespace {

std::string origin_fn(const void* ctx, const std::string& path) {
  return origin_of(*static_cast<const ConfigOrigins*>(ctx), path);
}

void record_origins(const YAML::Node& value, const std::string& path, const std::string& file, ConfigOrigins& o) {
  o[path] = file;
  if (value.IsMap())
    for (const auto& kv : value) record_origins(kv.second, path + "." + kv.first.as<std::string>(), file, o);
}

// Deep merge: maps merge key by key, everything else replaces.
void merge(YAML::Node dst, const YAML::Node& src, const std::string& prefix, const std::string& file,
           ConfigOrigins& origins) {
  for (const auto& kv : src) {
    std::string key = kv.first.as<std::string>();
    std::string path = prefix.empty() ? key : prefix + "." + key;
    const YAML::Node& cdst = dst;
    YAML::Node existing = cdst[key];
    if (kv.second.IsMap() && existing && existing.IsMap()) {
      merge(existing, kv.second, path, file, origins);
    } else {
      dst[key] = YAML::Clone(kv.second);
      record_origins(kv.second, path, file, origins);
    }
  }
}

// yaml-cpp keeps both entries of a repeated key and the merge would let the second win silently: refuse it,
// naming both lines (a config with `train:` twice is a pasting mistake, never a wish).
void reject_duplicate_keys(const YAML::Node& node, const std::string& name, const std::string& prefix) {
  if (node.IsSequence()) {
    for (const auto& item : node) reject_duplicate_keys(item, name, prefix);
    return;
  }
  if (!node.IsMap()) return;
  std::map<std::string, int> line_of;
  for (const auto& kv : node) {
    const std::string key = kv.first.Scalar();
    const std::string path = prefix.empty() ? key : prefix + "." + key;
    const int line = kv.first.Mark().line + 1;
    auto [it, fresh] = line_of.emplace(key, line);
    if (!fresh)
      fail(name, path, "duplicate key (lines " + std::to_string(it->second) + " and " + std::to_string(line) + ")");
    reject_duplicate_keys(kv.second, name, path);
  }
}

// A mapping of sections. An empty document is an error where `what` is a file: a config file that sets nothing
// (empty, or only comments) is never the config that was meant.
YAML::Node parse_yaml(const std::string& text, const std::string& name, bool allow_empty) {
  YAML::Node n;
  try {
    n = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    throw ConfigError("config error: " + name + ": YAML syntax error at line " + std::to_string(e.mark.line + 1) +
                      ", column " + std::to_string(e.mark.column + 1) + ": " + e.msg);
  }
  if (n.IsNull()) {
    if (!allow_empty) throw ConfigError("config error: " + name + ": the file sets nothing (empty or only comments)");
    return YAML::Node(YAML::NodeType::Map);
  }
  if (!n.IsMap()) throw ConfigError("config error: " + name + ": the top level must be a mapping of sections");
  reject_duplicate_keys(n, name, "");
  return n;
}

// Loads a file and its `base:` chain into `tree`, bases first.
void load_tree(const fs::path& path, YAML::Node& tree, ConfigOrigins& origins, std::vector<fs::path>& chain) {
  std::error_code ec;
  fs::path canonical = fs::weakly_canonical(path, ec);
  for (const auto& p : chain)
    if (p == canonical) throw ConfigError("config error: " + path.string() + ": base: inheritance cycle");
  // A directory would read as an empty stream: say what it is instead of training the defaults.
  const fs::file_status st = fs::status(path, ec);
  if (!fs::exists(st)) throw ConfigError("config error: " + path.string() + ": no such file");
  if (!fs::is_regular_file(st))
    throw ConfigError("config error: " + path.string() + ": not a regular file (" +
                      (fs::is_directory(st) ? "a directory" : "not a plain file") + "); a config is one YAML file");
  std::ifstream in(path);
  if (!in) throw ConfigError("config error: " + path.string() + ": cannot open file: " + std::strerror(errno));
  std::stringstream ss;
  ss << in.rdbuf();
  if (in.bad()) throw ConfigError("config error: " + path.string() + ": read failed: " + std::strerror(errno));
  YAML::Node node = parse_yaml(ss.str(), path.string(), /*allow_empty=*/false);
  chain.push_back(canonical);
  const YAML::Node& cnode = node;
  if (YAML::Node base = cnode["base"]) {
    if (!base.IsScalar()) fail(path.string(), "base", "expected a file name, got " + scalar_text(base));
    fs::path base_path = path.parent_path() / base.Scalar();
    if (!fs::exists(base_path)) fail(path.string(), "base", "file not found: " + base_path.string());
    load_tree(base_path, tree, origins, chain);
    node.remove("base");
  }
  chain.pop_back();
  merge(tree, node, "", path.string(), origins);
}

void apply_override(YAML::Node tree, const std::string& item, ConfigOrigins& origins) {
  auto eq = item.find('=');
  std::string origin = "--set " + item;
  if (eq == std::string::npos || eq == 0)
    throw ConfigError("config error: " + origin + ": expected section.key=value");
  std::string path = item.substr(0, eq);
  std::string text = item.substr(eq + 1);
  YAML::Node value;
  try {
    value = YAML::Load(text);
  } catch (const YAML::Exception& e) {
    fail(origin, path, "cannot parse value '" + text + "': " + e.msg);
  }
  reject_duplicate_keys(value, origin, path);
  std::vector<std::string> parts;
  std::stringstream ps(path);
  for (std::string part; std::getline(ps, part, '.');) parts.push_back(part);
  if (parts.size() < 2) fail(origin, path, "expected section.key=value");
  YAML::Node node = tree;
  std::string walked;
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    walked += (i ? "." : "") + parts[i];
    const YAML::Node& cnode = node;
    if (!cnode[parts[i]]) {
      node[parts[i]] = YAML::Node(YAML::NodeType::Map);
      origins[walked] = origin;  // a section this --set creates is its own (e.g. an unknown one)
    } else if (!cnode[parts[i]].IsMap()) {
      // The offending text is where the non-mapping value was written, not in this --set.
      fail(origin_of(origins, walked), walked,
           "expected a mapping of keys, got " + scalar_text(cnode[parts[i]]) + " (" + origin + " sets a key in it)");
    }
    YAML::Node next = node[parts[i]];
    node.reset(next);
  }
  node[parts.back()] = value;
  record_origins(value, path, origin, origins);
}

template <class Section>
void decode_section(const YAML::Node& tree, const char* key, Section& section, const ConfigOrigins& origins) {
  const YAML::Node& ctree = tree;
  YAML::Node node = ctree[key];
  if (!node || node.IsNull()) return;
  if (!node.IsMap()) fail(origin_of(origins, key), key, "expected a mapping of keys, got " + scalar_text(node));
  FieldDecoder dec(node, std::string(key) + ".", &origin_fn, &origins);
  Section::visit(section, dec);
  dec.check_unknown(nullptr);
}

struct SectionDecoder {
  const YAML::Node& tree;
  const ConfigOrigins& origins;
  std::set<std::string> known;
  template <class S>
  void section(const char* key, S& s, const char*) {
    known.insert(key);
    decode_section(tree, key, s, origins);
  }
};

struct SectionEncoder {
  std::string out;
  template <class S>
  void section(const char* key, const S& s, const char* doc) {
    FieldEncoder enc("  ");
    S::visit(s, enc);
    out += std::string("# ") + doc + "\n" + key + ":\n" + enc.text();
  }
};

LoadedConfig decode(YAML::Node tree, ConfigOrigins origins, const std::vector<std::string>& overrides) {
  for (const auto& o : overrides) apply_override(tree, o, origins);
  LoadedConfig out;
  SectionDecoder dec{tree, origins, {}};
  Config::visit(out.config, dec);
  for (const auto& kv : tree) {
    std::string key = kv.first.as<std::string>();
    if (!dec.known.count(key)) fail(origin_of(origins, key), key, "unknown section");
  }
  validate(out.config, origins);
  out.origins = std::move(origins);
  return out;
}


void validate_model(const ModelConfig& m, const Checker& c, const std::string& p) {
  c.require(m.patch_size > 0, p + "patch_size", "must be positive, got " + std::to_string(m.patch_size));
  c.require(m.image_size > 0, p + "image_size", "must be positive, got " + std::to_string(m.image_size));
  c.require(m.image_size % m.patch_size == 0, p + "image_size",
            std::to_string(m.image_size) + " is not divisible by patch_size " + std::to_string(m.patch_size));
  c.require(m.num_channels > 0, p + "num_channels", "must be positive");
  c.require(m.hidden_size > 0, p + "hidden_size", "must be positive");
  c.require(m.num_hidden_layers > 0, p + "num_hidden_layers", "must be positive");
  c.require(m.num_attention_heads > 0, p + "num_attention_heads", "must be positive");
  c.require(m.hidden_size % m.num_attention_heads == 0, p + "hidden_size",
            std::to_string(m.hidden_size) + " is not divisible by num_attention_heads " +
                std::to_string(m.num_attention_heads));
  c.require(!m.use_rope || m.head_dim() % 4 == 0, p + "num_attention_heads",
            "2-D RoPE needs head_dim divisible by 4, got head_dim " + std::to_string(m.head_dim()));
  c.require(m.intermediate_size > 0, p + "intermediate_size", "must be positive");
  static const std::set<std::string> acts = {"gelu", "gelu_new", "gelu_pytorch_tanh", "silu", "swish", "relu"};
  c.require(acts.count(m.hidden_act) > 0, p + "hidden_act",
            "unknown activation '" + m.hidden_act + "' (gelu, gelu_new, gelu_pytorch_tanh, silu, swish, relu)");
  c.require(!m.qk_norm_bias || m.qk_norm_affine, p + "qk_norm_bias", "needs qk_norm_affine: true");
  c.require(m.layer_norm_eps > 0, p + "layer_norm_eps", "must be positive");
  c.require(m.rope_theta > 0, p + "rope_theta", "must be positive");
  c.require(!m.rope_grid || *m.rope_grid > 0, p + "rope_grid", "must be a positive grid side or null");
  c.require(!m.pos_embed_rescale || *m.pos_embed_rescale >= 1.0, p + "pos_embed_rescale", "must be >= 1 or null");
  c.require(!m.pos_embed_shift || *m.pos_embed_shift >= 0.0, p + "pos_embed_shift", "must be >= 0 or null");
  c.require(!m.pos_embed_jitter || *m.pos_embed_jitter >= 1.0, p + "pos_embed_jitter", "must be >= 1 or null");
  c.require(m.drop_path_prob >= 0.0 && m.drop_path_prob < 1.0, p + "drop_path_prob", "must be in [0, 1)");
  // p = 1 is well defined (the branch vanishes), as in PyTorch; the parity tests use it.
  for (auto [name, v] : {std::pair<const char*, double>{"hidden_dropout_prob", m.hidden_dropout_prob},
                         {"attention_probs_dropout_prob", m.attention_probs_dropout_prob}})
    c.require(v >= 0.0 && v <= 1.0, p + name, "must be in [0, 1]");
  c.require(m.initializer_range > 0, p + "initializer_range", "must be positive");
  c.require(!m.use_sincos_pos_embed || m.hidden_size % 4 == 0, p + "hidden_size",
            "the 2-D sin-cos position embedding needs a multiple of 4, got " + std::to_string(m.hidden_size));
  c.require(!(m.use_sincos_pos_embed && m.use_abs_pos_embed), p + "use_sincos_pos_embed",
            "choose one absolute position embedding (use_abs_pos_embed is also on)");
  c.require(m.num_prompt_token == 0, p + "num_prompt_token",
            "prompt tokens are not supported (every release uses 0), got " + std::to_string(m.num_prompt_token));
}

}  // namespace

void validate(const ModelConfig& model, const std::string& where, const std::string& prefix) {
  validate_model(model, Checker{nullptr, where}, prefix);
}


void validate(const Config& cfg, const ConfigOrigins& origins) {
  Checker c{&origins, ""};
  validate_model(cfg.model, c, "model.");

  validate_objective(cfg, c);

  const auto& d = cfg.data;
  static const std::set<std::string> datasets = {"fashion_mnist", "image_folder", "ade20k", "synthetic"};
  c.require(datasets.count(d.dataset) > 0, "data.dataset",
            "unknown dataset '" + d.dataset + "' (fashion_mnist, image_folder, ade20k, synthetic)");
  c.require(d.num_channels == 1 || d.num_channels == 3, "data.num_channels", "must be 1 or 3");
  c.require(d.num_channels == cfg.model.num_channels, "data.num_channels",
            "is " + std::to_string(d.num_channels) + " but model.num_channels is " +
                std::to_string(cfg.model.num_channels));
  c.require(d.image_size > 0 && d.image_size % cfg.model.patch_size == 0, "data.image_size",
            std::to_string(d.image_size) + " is not a positive multiple of model.patch_size " +
                std::to_string(cfg.model.patch_size));
  c.require(static_cast<int>(d.mean.size()) == d.num_channels, "data.mean",
            "needs " + std::to_string(d.num_channels) + " values, got " + std::to_string(d.mean.size()));
  c.require(static_cast<int>(d.std.size()) == d.num_channels, "data.std",
            "needs " + std::to_string(d.num_channels) + " values, got " + std::to_string(d.std.size()));
  for (double s : d.std) c.require(s > 0, "data.std", "values must be positive");
  c.require(d.crop_scale.size() == 2 && d.crop_scale[0] > 0 && d.crop_scale[0] <= d.crop_scale[1] &&
                d.crop_scale[1] <= 1.0,
            "data.crop_scale", "must be [min, max] with 0 < min <= max <= 1");
  c.require(d.crop_ratio.size() == 2 && d.crop_ratio[0] > 0 && d.crop_ratio[0] <= d.crop_ratio[1], "data.crop_ratio",
            "must be [min, max] with 0 < min <= max");
  static const std::set<std::string> interps = {"bilinear", "bicubic", "nearest", "area"};
  c.require(interps.count(d.interpolation) > 0, "data.interpolation",
            "unknown filter '" + d.interpolation + "' (bilinear, bicubic, nearest, area)");
  c.require(d.hflip_prob >= 0 && d.hflip_prob <= 1, "data.hflip_prob", "must be in [0, 1]");
  c.require(d.num_workers >= 0, "data.num_workers", "must be >= 0");
  c.require(d.prefetch_batches >= 1, "data.prefetch_batches", "must be >= 1");
  c.require(d.max_bad_fraction >= 0 && d.max_bad_fraction <= 1, "data.max_bad_fraction", "must be in [0, 1]");
  c.require(d.eval_crop_pct > 0 && d.eval_crop_pct <= 1, "data.eval_crop_pct", "must be in (0, 1]");
  c.require(d.eval_resize == "shorter_side" || d.eval_resize == "square", "data.eval_resize",
            "expected shorter_side or square, got '" + d.eval_resize + "'");
  c.require(d.synthetic_size > 0, "data.synthetic_size", "must be positive");
  c.require(d.train_samples >= 0, "data.train_samples", "must be >= 0 (0 = the whole split)");
  c.require(d.subset_seed >= 0, "data.subset_seed", "must be >= 0");
  if (!d.auto_augment.empty()) {
    std::string why;
    try {
      RandAugmentSpec::parse(d.auto_augment);
    } catch (const std::invalid_argument& e) {
      why = e.what();
    }
    c.require(why.empty(), "data.auto_augment", why);
  }
  c.require(d.color_jitter >= 0, "data.color_jitter", "must be >= 0 (0 = off)");
  c.require(d.erase_prob >= 0 && d.erase_prob <= 1, "data.erase_prob", "must be in [0, 1]");

  const auto& op = cfg.optim;
  c.require(op.name == "adamw", "optim.name", "unknown optimizer '" + op.name + "' (adamw)");
  c.require(op.base_lr > 0, "optim.base_lr", "must be positive");
  c.require(op.lr_batch_reference > 0, "optim.lr_batch_reference", "must be positive");
  c.require(op.betas.size() == 2 && op.betas[0] >= 0 && op.betas[0] < 1 && op.betas[1] >= 0 && op.betas[1] < 1,
            "optim.betas", "must be [beta1, beta2] in [0, 1)");
  c.require(op.eps > 0, "optim.eps", "must be positive");
  c.require(op.weight_decay >= 0, "optim.weight_decay", "must be >= 0");
  if (op.final_weight_decay) {
    c.require(*op.final_weight_decay >= 0, "optim.final_weight_decay", "must be >= 0 (null = no ramp)");
    // The ramp scales the groups that decay; with weight_decay 0 there are none, and the ramp would do nothing.
    c.require(op.weight_decay > 0, "optim.final_weight_decay",
              "needs optim.weight_decay > 0 (the value the ramp starts from)");
  }
  c.require(op.grad_clip >= 0, "optim.grad_clip", "must be >= 0 (0 = off)");

  const auto& s = cfg.schedule;
  static const std::set<std::string> schedules = {"cosine",      "ijepa_cosine", "constant", "llrd_cosine_warmup",
                                                  "llrd_cosine", "poly"};
  c.require(schedules.count(s.name) > 0, "schedule.name",
            "unknown schedule '" + s.name + "' (cosine, ijepa_cosine, constant, llrd_cosine_warmup, llrd_cosine, poly)");
  c.require(s.epochs > 0 || s.max_steps > 0, "schedule.epochs", "epochs or max_steps must be positive");
  c.require(s.max_steps >= 0, "schedule.max_steps", "must be >= 0");
  c.require(s.warmup_fraction >= 0 && s.warmup_fraction < 1, "schedule.warmup_fraction", "must be in [0, 1)");
  c.require(s.min_lr >= 0, "schedule.min_lr", "must be >= 0");
  c.require(s.warmup_start_lr >= 0, "schedule.warmup_start_lr", "must be >= 0");
  // Only the pretraining schedules read it: elsewhere a start lr would be silently ignored.
  c.require(s.warmup_start_lr == 0 || s.name == "cosine" || s.name == "ijepa_cosine", "schedule.warmup_start_lr",
            "is read by the cosine and ijepa_cosine schedules only, not by " + s.name);

  const auto& t = cfg.train;
  static const std::regex device_re("cpu|cuda|cuda:[0-9]+");
  c.require(std::regex_match(t.device, device_re), "train.device", "expected cpu, cuda or cuda:N, got '" + t.device + "'");
  c.require(t.precision == "fp32" || t.precision == "bf16", "train.precision",
            "expected fp32 or bf16, got '" + t.precision + "'");
  c.require(t.micro_batch > 0, "train.micro_batch", "must be positive");
  c.require(t.total_batch > 0 && t.total_batch % t.micro_batch == 0, "train.total_batch",
            std::to_string(t.total_batch) + " is not a positive multiple of train.micro_batch " +
                std::to_string(t.micro_batch));
  c.require(t.threads >= 0, "train.threads", "must be >= 0 (0 = all cores)");
  c.require(!t.output_dir.empty(), "train.output_dir", "must not be empty");
  c.require(t.checkpoint_every > 0, "train.checkpoint_every", "must be positive");
  c.require(t.keep_last >= 1, "train.keep_last", "must be >= 1");
  c.require(t.ema_decay >= 0 && t.ema_decay < 1, "train.ema_decay", "must be in [0, 1)");

  const auto& di = cfg.dist;
  c.require(di.backend == "auto" || di.backend == "nccl" || di.backend == "gloo", "dist.backend",
            "expected auto, nccl or gloo, got '" + di.backend + "'");
  c.require(di.timeout_s > 0, "dist.timeout_s", "must be positive");
  c.require(di.bucket_mb > 0, "dist.bucket_mb", "must be positive");
  c.require(di.master_port > 0 && di.master_port < 65536, "dist.master_port", "must be a TCP port (1-65535)");

  const auto& l = cfg.log;
  c.require(l.log_every > 0, "log.log_every", "must be positive");
  static const std::set<std::string> levels = {"trace", "debug", "info", "warn", "error"};
  c.require(levels.count(l.level) > 0, "log.level", "unknown level '" + l.level + "'");

  const auto& e = cfg.eval;
  c.require(e.knn_k >= 0, "eval.knn_k", "must be >= 0 (0 = off)");
  c.require(e.knn_every >= 0, "eval.knn_every", "must be >= 0");
  c.require(e.knn_train_samples >= 0, "eval.knn_train_samples", "must be >= 0 (0 = all)");
  c.require(e.knn_eval_samples >= 0, "eval.knn_eval_samples", "must be >= 0 (0 = all)");

  const auto& f = cfg.finetune;
  c.require(f.head == "finetune" || f.head == "linear_probe" || f.head == "attentive_probe", "finetune.head",
            "expected finetune, linear_probe or attentive_probe, got '" + f.head + "'");
  c.require(f.probe_blocks >= 1 && f.probe_blocks <= cfg.model.num_hidden_layers, "finetune.probe_blocks",
            "must be in [1, model.num_hidden_layers]");
  c.require(f.num_classes >= 0, "finetune.num_classes", "must be >= 0 (0 = from the dataset)");
  c.require(f.llrd > 0 && f.llrd <= 1, "finetune.llrd", "must be in (0, 1]");
  c.require(!f.llrd_end || (*f.llrd_end > 0 && *f.llrd_end <= 1), "finetune.llrd_end", "must be in (0, 1] or null");
  c.require(!f.llrd_end || s.name == "llrd_cosine", "finetune.llrd_end",
            "only schedule llrd_cosine moves llrd (schedule.name is " + s.name + "): set it to null");
  c.require(f.head_lr > 0, "finetune.head_lr", "must be positive");
  c.require(f.label_smoothing >= 0 && f.label_smoothing < 1, "finetune.label_smoothing", "must be in [0, 1)");
  c.require(f.mixup_alpha >= 0, "finetune.mixup_alpha", "must be >= 0 (0 = off)");
  c.require(f.cutmix_alpha >= 0, "finetune.cutmix_alpha", "must be >= 0 (0 = off)");
  c.require(f.mixup_prob >= 0 && f.mixup_prob <= 1, "finetune.mixup_prob", "must be in [0, 1]");
  c.require(f.mixup_switch_prob >= 0 && f.mixup_switch_prob <= 1, "finetune.mixup_switch_prob", "must be in [0, 1]");
  c.require(f.head_init == "zeros" || f.head_init == "trunc_normal", "finetune.head_init",
            "expected zeros or trunc_normal, got '" + f.head_init + "'");
  c.require(f.eval_every_epochs >= 0, "finetune.eval_every_epochs", "must be >= 0 (0 = end only)");

  const auto& g = cfg.seg;
  c.require(g.num_classes >= 0 && g.num_classes <= 255, "seg.num_classes",
            "must be in [0, 255] (0 = from the dataset; 255 is the ignore label)");
  bool increasing = g.out_indices.empty() || g.out_indices.size() == 4;
  for (size_t i = 0; i < g.out_indices.size(); ++i)
    increasing = increasing && g.out_indices[i] >= 0 && g.out_indices[i] < cfg.model.num_hidden_layers &&
                 (i == 0 || g.out_indices[i] > g.out_indices[i - 1]);
  c.require(increasing, "seg.out_indices",
            "must be empty or 4 increasing block indices in [0, model.num_hidden_layers = " +
                std::to_string(cfg.model.num_hidden_layers) + ")");
  c.require(g.channels > 0, "seg.channels", "must be positive");
  c.require(g.aux_channels > 0, "seg.aux_channels", "must be positive");
  c.require(g.aux_weight >= 0, "seg.aux_weight", "must be >= 0");
  c.require(g.dropout >= 0 && g.dropout < 1, "seg.dropout", "must be in [0, 1)");
  c.require(g.scale_long > 0 && g.scale_short > 0, "seg.scale_long", "scale_long and scale_short must be positive");
  c.require(g.ratio_range.size() == 2 && g.ratio_range[0] > 0 && g.ratio_range[0] <= g.ratio_range[1],
            "seg.ratio_range", "must be [lo, hi] with 0 < lo <= hi");
  c.require(g.cat_max_ratio > 0 && g.cat_max_ratio <= 1, "seg.cat_max_ratio", "must be in (0, 1] (1 = off)");
  c.require(g.layer_decay > 0 && g.layer_decay <= 1, "seg.layer_decay", "must be in (0, 1]");
  c.require(g.warmup_iters >= 0, "seg.warmup_iters", "must be >= 0");
  c.require(g.warmup_ratio >= 0 && g.warmup_ratio <= 1, "seg.warmup_ratio", "must be in [0, 1]");
  c.require(g.poly_power > 0, "seg.poly_power", "must be positive");
  c.require(g.eval_mode == "slide" || g.eval_mode == "whole", "seg.eval_mode",
            "expected slide or whole, got '" + g.eval_mode + "'");
  c.require(g.eval_crop >= 0 && g.eval_crop % cfg.model.patch_size == 0, "seg.eval_crop",
            "must be 0 (= data.image_size) or a positive multiple of model.patch_size " +
                std::to_string(cfg.model.patch_size));
  c.require(g.eval_stride > 0, "seg.eval_stride", "must be positive");
  c.require(g.eval_every >= 0, "seg.eval_every", "must be >= 0 (0 = end only)");
  c.require(g.eval_samples >= 0, "seg.eval_samples", "must be >= 0 (0 = all)");
}

void validate_for_training(const Config& cfg, const ConfigOrigins& origins, int world_size) {
  Checker c{&origins, ""};
  const auto& t = cfg.train;
  c.require(t.total_batch % (t.micro_batch * world_size) == 0, "train.total_batch",
            std::to_string(t.total_batch) + " is not a multiple of train.micro_batch " + std::to_string(t.micro_batch) +
                " x " + std::to_string(world_size) + " processes");
  c.require(cfg.data.dataset != "image_folder" || !cfg.data.root.empty(), "data.root",
            "required for dataset image_folder: set it in the config or with --set data.root=/path/to/dataset");
  c.require(cfg.data.dataset != "ade20k" || !cfg.data.root.empty(), "data.root",
            "required for dataset ade20k: the ADEChallengeData2016 folder (--set data.root=/path/to/ADEChallengeData2016)");
  c.require(!cfg.finetune.init_ema || !cfg.finetune.init.empty(), "finetune.init_ema",
            "needs finetune.init (the training checkpoint whose EMA weights to start from)");
  c.require(!cfg.seg.init_ema || !cfg.seg.init.empty(), "seg.init_ema",
            "needs seg.init (the training checkpoint whose EMA weights to start from)");
}

LoadedConfig load_config(const std::string& path, const std::vector<std::string>& overrides) {
  YAML::Node tree(YAML::NodeType::Map);
  ConfigOrigins origins;
  std::vector<fs::path> chain;
  load_tree(path, tree, origins, chain);
  return decode(tree, std::move(origins), overrides);
}

LoadedConfig load_config_from_string(const std::string& yaml, const std::string& name,
                                     const std::vector<std::string>& overrides) {
  YAML::Node tree(YAML::NodeType::Map);
  ConfigOrigins origins;
  YAML::Node node = parse_yaml(yaml, name, /*allow_empty=*/true);
  const YAML::Node& cnode = node;
  if (cnode["base"]) fail(name, "base", "inheritance needs a file (relative paths resolve against it)");
  merge(tree, node, "", name, origins);
  return decode(tree, std::move(origins), overrides);
}

std::string to_yaml(const Config& config) {
  SectionEncoder enc;
  Config::visit(config, enc);
  return "# Effective configuration (all defaults filled in). Reload with --config.\n" + enc.out;
}

namespace {

// Every leaf of a section as "prefix.key" -> its value's text, nested sections flattened.
struct FlatEncoder {
  std::string prefix;
  std::vector<std::pair<std::string, std::string>>* out;
  template <class T>
  void operator()(const char* key, const T& field, const char*) {
    if constexpr (is_section<T>::value) {
      FlatEncoder nested{prefix + key + ".", out};
      T::visit(field, nested);
    } else {
      out->emplace_back(prefix + key, encode_value(field));
    }
  }
  template <class S>
  void section(const char* key, const S& s, const char*) {
    FlatEncoder nested{std::string(key) + ".", out};
    S::visit(s, nested);
  }
};

std::vector<std::pair<std::string, std::string>> flatten(const Config& config) {
  std::vector<std::pair<std::string, std::string>> out;
  FlatEncoder enc{"", &out};
  Config::visit(config, enc);
  return out;
}

}  // namespace

std::string config_fingerprint(const Config& config) {
  const auto defaults = flatten(Config{});
  std::map<std::string, std::string> by_key(defaults.begin(), defaults.end());
  std::string out;
  for (const auto& [key, value] : flatten(config))
    if (by_key.at(key) != value) out += key + ": " + value + "\n";
  return out;
}

void save_config(const Config& config, const std::string& path) {
  std::string text = to_yaml(config);
  write_text_atomic(path, text);
}

bool operator==(const ModelConfig& a, const ModelConfig& b) {
  FieldEncoder ea(""), eb("");
  ModelConfig::visit(a, ea);
  ModelConfig::visit(b, eb);
  return ea.text() == eb.text();
}

}  // namespace nepa
