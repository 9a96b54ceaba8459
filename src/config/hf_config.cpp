#include "nepa/config/hf_config.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "codec.h"
#include "nepa/io/atomic_file.h"

namespace nepa {
namespace fs = std::filesystem;
using namespace config_detail;

namespace {

// Keys the official files carry that are not fields of the backbone. add_pooling_layer is a constructor
// argument of the HF model (a pooler that NEPA never uses), so it has no weights in the released files.
const std::set<std::string> kMetaKeys = {"architectures", "model_type", "id2label", "label2id", "dtype",
                                         "torch_dtype", "transformers_version", "finetuning_task",
                                         "add_pooling_layer", "problem_type"};

// Fields we add for ablations; written to config.json only when they differ from the official behaviour.
const std::set<std::string> kExtensionKeys = {"use_rope",  "use_abs_pos_embed", "use_mask_token",
                                              "rope_grid", "use_cls_token",     "use_sincos_pos_embed"};

std::string file_origin(const void* ctx, const std::string&) { return *static_cast<const std::string*>(ctx); }

// Emits the model fields as JSON members (name -> value text), reusing the YAML encoders: for these
// types (numbers, booleans, null, quoted strings) YAML flow text and JSON coincide.
struct JsonFields {
  std::map<std::string, std::string> members;
  template <class T>
  void operator()(const char* key, const T& field, const char*) {
    members[key] = encode_value(field);
  }
};

// The parsed JSON as a YAML node, for the field decoders the YAML configs use (one set of type and range
// checks). Numbers keep their JSON text.
YAML::Node to_yaml_node(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::object: {
      YAML::Node n(YAML::NodeType::Map);
      for (const auto& [k, v] : j.items()) n[k] = to_yaml_node(v);
      return n;
    }
    case nlohmann::json::value_t::array: {
      YAML::Node n(YAML::NodeType::Sequence);
      for (const auto& v : j) n.push_back(to_yaml_node(v));
      return n;
    }
    case nlohmann::json::value_t::string:
      return YAML::Node(j.get<std::string>());
    case nlohmann::json::value_t::null:
      return YAML::Node(YAML::NodeType::Null);
    default:  // numbers and booleans
      return YAML::Node(j.dump());
  }
}

}  // namespace

HfModelConfig parse_hf_config(const std::string& json_text, const std::string& name) {
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(json_text);
  } catch (const nlohmann::json::parse_error& e) {
    throw ConfigError("config error: " + name + ": not valid JSON: " + e.what());
  }
  if (!json.is_object()) throw ConfigError("config error: " + name + ": expected a JSON object");
  YAML::Node root = to_yaml_node(json);

  HfModelConfig out;
  const YAML::Node& croot = root;
  if (YAML::Node mt = croot["model_type"]) {
    if (!mt.IsScalar() || mt.Scalar() != "vit_nepa")
      fail(name, "model_type", "expected \"vit_nepa\", got " + scalar_text(mt));
  }
  if (YAML::Node arch = croot["architectures"]) {
    if (!arch.IsSequence()) fail(name, "architectures", "expected a list of class names");
    for (const auto& a : arch) out.architectures.push_back(a.as<std::string>());
  }
  if (YAML::Node labels = croot["id2label"]) {
    if (!labels.IsMap()) fail(name, "id2label", "expected an object of index -> label");
    std::map<long long, std::string> by_index;
    for (const auto& kv : labels) {
      long long idx = parse_integer(kv.first, {name, "id2label"});
      if (idx < 0 || idx >= static_cast<long long>(labels.size()))
        fail(name, "id2label", "index " + kv.first.Scalar() + " outside [0, " + std::to_string(labels.size()) + ")");
      by_index[idx] = kv.second.as<std::string>();
    }
    for (auto& kv : by_index) out.id2label.push_back(kv.second);
  }

  FieldDecoder dec(root, "", &file_origin, &name);
  ModelConfig::visit(out.model, dec);
  std::vector<std::string> unknown;
  dec.check_unknown(&unknown);
  for (auto& k : unknown)
    if (!kMetaKeys.count(k)) out.ignored_keys.push_back(k);
  validate(out.model, name, "");
  return out;
}

HfModelConfig read_hf_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ConfigError("config error: " + path + ": cannot open file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_hf_config(ss.str(), path);
}

std::string to_hf_config_json(const HfModelConfig& config) {
  JsonFields fields;
  ModelConfig::visit(config.model, fields);
  const ModelConfig defaults;
  JsonFields default_fields;
  ModelConfig::visit(defaults, default_fields);
  for (const auto& k : kExtensionKeys)
    if (fields.members[k] == default_fields.members[k]) fields.members.erase(k);

  auto& m = fields.members;
  std::vector<std::string> arch = config.architectures;
  if (arch.empty()) arch.push_back(config.id2label.empty() ? "ViTNepaForPreTraining" : "ViTNepaForImageClassification");
  std::string a = "[\n";
  for (std::size_t i = 0; i < arch.size(); ++i) a += "    " + quote(arch[i]) + (i + 1 < arch.size() ? ",\n" : "\n");
  m["architectures"] = a + "  ]";
  m["model_type"] = quote("vit_nepa");
  m["dtype"] = quote("float32");
  if (!config.id2label.empty()) {
    std::string id2label = "{\n", label2id = "{\n";
    std::vector<std::pair<std::string, std::size_t>> sorted;  // label2id sorted by name, as HF writes it
    for (std::size_t i = 0; i < config.id2label.size(); ++i) {
      id2label += "    " + quote(std::to_string(i)) + ": " + quote(config.id2label[i]) +
                  (i + 1 < config.id2label.size() ? ",\n" : "\n");
      sorted.emplace_back(config.id2label[i], i);
    }
    std::sort(sorted.begin(), sorted.end());
    for (std::size_t i = 0; i < sorted.size(); ++i)
      label2id += "    " + quote(sorted[i].first) + ": " + std::to_string(sorted[i].second) +
                  (i + 1 < sorted.size() ? ",\n" : "\n");
    m["id2label"] = id2label + "  }";
    m["label2id"] = label2id + "  }";
  }
  std::string out = "{\n";
  std::size_t i = 0;
  for (const auto& [k, v] : m) out += "  " + quote(k) + ": " + v + (++i < m.size() ? ",\n" : "\n");
  return out + "}\n";
}

void write_hf_config(const HfModelConfig& config, const std::string& path) {
  std::string text = to_hf_config_json(config);
  write_text_atomic(path, text);
}

std::vector<std::string> adopt_backbone_architecture(ModelConfig& model, const std::string& init) {
  if (init.empty() || !fs::is_directory(init) || !fs::exists(fs::path(init) / "config.json")) return {};
  const ModelConfig from = read_hf_config((fs::path(init) / "config.json").string()).model;
  std::vector<std::string> changed;
  auto adopt = [&](const char* key, auto& mine, const auto& theirs) {
    if (mine == theirs) return;
    // As the config file spells them (config.yaml, --set).
    changed.push_back(fmt::format("model.{}: {} -> {}", key, encode_value(mine), encode_value(theirs)));
    mine = theirs;
  };
  adopt("patch_size", model.patch_size, from.patch_size);
  adopt("num_channels", model.num_channels, from.num_channels);
  adopt("hidden_size", model.hidden_size, from.hidden_size);
  adopt("num_hidden_layers", model.num_hidden_layers, from.num_hidden_layers);
  adopt("num_attention_heads", model.num_attention_heads, from.num_attention_heads);
  adopt("intermediate_size", model.intermediate_size, from.intermediate_size);
  adopt("hidden_act", model.hidden_act, from.hidden_act);
  adopt("use_gated_mlp", model.use_gated_mlp, from.use_gated_mlp);
  adopt("qkv_bias", model.qkv_bias, from.qkv_bias);
  adopt("qk_norm", model.qk_norm, from.qk_norm);
  adopt("qk_norm_affine", model.qk_norm_affine, from.qk_norm_affine);
  adopt("qk_norm_bias", model.qk_norm_bias, from.qk_norm_bias);
  adopt("layer_norm_eps", model.layer_norm_eps, from.layer_norm_eps);
  adopt("layerscale_value", model.layerscale_value, from.layerscale_value);
  adopt("use_rope", model.use_rope, from.use_rope);
  adopt("rope_theta", model.rope_theta, from.rope_theta);
  adopt("use_abs_pos_embed", model.use_abs_pos_embed, from.use_abs_pos_embed);
  adopt("use_cls_token", model.use_cls_token, from.use_cls_token);
  adopt("use_sincos_pos_embed", model.use_sincos_pos_embed, from.use_sincos_pos_embed);
  return changed;
}

}  // namespace nepa
