// nepa_tool: checkpoint inspection, reference forward passes, config printing, fresh initialisation, the
// segmentation demo's scenes and the paper's attention / similarity figures.
// Wiring only: everything it does lives in the nepa library.
#include <fmt/format.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <filesystem>
#include <iostream>

#include "app_cli.h"
#include "nepa/config/config.h"
#include "nepa/config/hf_config.h"
#include "nepa/data/fashion_mnist.h"
#include "nepa/data/scenes.h"
#include "nepa/eval/attention_maps.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/io/safetensors.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/nepa_loss.h"

namespace fs = std::filesystem;
using namespace nepa;

namespace {

int info(const std::string& path) {
  fs::path p(path);
  fs::path weights = fs::is_directory(p) ? p / "model.safetensors" : p;
  fs::path config = fs::is_directory(p) ? p / "config.json" : p.parent_path() / "config.json";
  if (fs::exists(config)) {
    HfModelConfig hf = read_hf_config(config.string());
    std::cout << "config: " << config.string() << "\n" << to_hf_config_json(hf);
  }
  SafetensorsHeader h = read_safetensors_header(weights.string());
  int64_t total = 0;
  std::cout << "tensors: " << weights.string() << "\n";
  for (const auto& e : h.entries) {
    int64_t n = 1;
    std::string shape;
    for (auto d : e.shape) {
      n *= d;
      shape += (shape.empty() ? "" : ", ") + std::to_string(d);
    }
    total += n;
    std::cout << "  " << e.name << "  " << e.dtype << " [" << shape << "]\n";
  }
  for (const auto& [k, v] : h.metadata) std::cout << "metadata " << k << " = " << v << "\n";
  std::cout << "tensors: " << h.entries.size() << "  parameters: " << total << "\n";
  return 0;
}

int forward(const std::string& model_path, const std::string& weights, const std::string& input,
            const std::string& output, bool bidirectional) {
  LoadedModel m = load_hf_model(model_path, weights, /*strict=*/true);
  if (bidirectional) m.model->set_causal(false);
  auto inputs = load_safetensors(input);
  auto it = inputs.find("pixel_values");
  if (it == inputs.end()) throw std::runtime_error(input + ": no tensor named pixel_values");
  NepaOutputs out = m.model->forward(it->second.to(torch::kFloat32));
  NepaLoss loss = next_embedding_loss(out.last_hidden_state, out.input_embedding);
  save_safetensors(output, {{"last_hidden_state", out.last_hidden_state},
                            {"input_embedding", out.input_embedding},
                            {"loss", loss.loss.detach()}});
  spdlog::info("forward: {} -> {} (loss {:.6f}, {})", input, output, loss.loss.item<double>(),
               m.model->is_causal() ? "causal" : "bidirectional");
  return 0;
}

// A freshly initialised backbone in the HF layout (seeded by train.seed), e.g. as a random-init baseline.
int init(const Config& cfg, const std::string& output) {
  torch::manual_seed(cfg.train.seed);
  ViTNepaModel model(cfg.model);
  save_hf_model(output, model, HfModelConfig{cfg.model, {}, {}, {}});
  spdlog::info("init: {} parameters -> {}", count_parameters(*model), output);
  return 0;
}

int make_scenes(const std::string& fashion_mnist, const std::string& out, const SceneOptions& o) {
  const std::string what = fmt::format("{} training + {} validation scenes of {}x{} with {}-{} items (seed {})",
                                       o.train_count, o.val_count, o.size, o.size, o.items_min, o.items_max, o.seed);
  if (write_fmnist_scenes(fashion_mnist, out, o)) spdlog::info("make-scenes: {} -> {}", what, out);
  else spdlog::info("make-scenes: {} already holds the {}", out, what);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nepa_tool: inspect checkpoints, run reference forwards, print configs, initialise backbones, make "
               "the segmentation demo's scenes, draw attention and similarity maps",
               "nepa_tool"};
  app.require_subcommand(1);

  std::string info_path;
  auto* info_cmd = app.add_subcommand("info", "print config, parameter count and tensors of a checkpoint");
  info_cmd->add_option("path", info_path, "model folder or .safetensors file")->required();

  std::string model_path, weights, input, output;
  bool bidirectional = false;
  auto* fwd = app.add_subcommand("forward", "run the backbone (eval mode) on pixel_values of a safetensors file");
  fwd->add_option("--model", model_path, "HF model folder or config.json")->required();
  fwd->add_option("--weights", weights, "model.safetensors overriding the folder's");
  fwd->add_option("--input", input, "safetensors file with a pixel_values tensor")->required();
  fwd->add_option("--output", output, "where last_hidden_state, input_embedding and loss go")->required();
  fwd->add_flag("--bidirectional", bidirectional, "attend bidirectionally (fine-tuning mode)");

  std::string config_path;
  std::vector<std::string> sets;
  auto* cfg_cmd = app.add_subcommand("config", "print the effective, documented config");
  auto* init_cmd = app.add_subcommand("init", "write a freshly initialised backbone (model.safetensors + config.json)");
  init_cmd->add_option("--output", output, "output folder")->required();
  for (auto* c : {cfg_cmd, init_cmd}) {
    c->add_option("--config", config_path, "experiment YAML")->required();
    c->add_option("--set", sets, "override, e.g. --set model.num_hidden_layers=6 (repeatable)");
  }

  std::string scenes_out, fashion_mnist;
  SceneOptions scenes;
  auto* scenes_cmd = app.add_subcommand(
      "make-scenes", "write the segmentation demo's scenes: Fashion-MNIST items on black canvases, in the ADE20K "
                     "layout with a classes.txt (data.dataset ade20k, reduce_zero_label)");
  scenes_cmd->add_option("--out", scenes_out, "output folder (written whole or not at all)")->required();
  scenes_cmd->add_option("--fashion-mnist", fashion_mnist,
                         std::string("Fashion-MNIST folder (default ") + kDefaultFashionMnistRoot + ")");
  scenes_cmd->add_option("--seed", scenes.seed, "the same seed writes the same bytes")
      ->check([](const std::string& v) {  // CLI11 would wrap -1 to 2^64 - 1
        return v.find('-') == std::string::npos ? std::string() : "a seed is a non-negative integer, not " + v;
      })
      ->capture_default_str();
  scenes_cmd->add_option("--train", scenes.train_count, "training scenes (items from the train split)")
      ->capture_default_str();
  scenes_cmd->add_option("--val", scenes.val_count, "validation scenes (items from the test split)")
      ->capture_default_str();
  scenes_cmd->add_option("--size", scenes.size, "canvas side in pixels")->capture_default_str();
  scenes_cmd->add_option("--items-min", scenes.items_min, "fewest items per scene")->capture_default_str();
  scenes_cmd->add_option("--items-max", scenes.items_max, "most items per scene")->capture_default_str();
  scenes_cmd->add_option("--scale-max", scenes.scale_max, "items resized by U[1, this] (1: as in pretraining)")
      ->capture_default_str();

  MapCommand maps;
  auto* attention_cmd = app.add_subcommand(
      "attention-map", "draw one block's attention probabilities of query patches over the input images (PNG grid)");
  auto* similarity_cmd = app.add_subcommand(
      "similarity-map", "draw the cosine similarity of query patches' output embeddings to every patch (PNG grid)");
  for (auto* c : {attention_cmd, similarity_cmd}) {
    c->add_option("--model", maps.models, "backbone folder (model.safetensors + config.json); repeat to stack models")
        ->required();
    c->add_option("--label", maps.labels, "title of each model's rows (default: the folder name); one per --model");
    c->add_option("--image", maps.images, "input image file (PNG/JPEG), resized to the model's image_size");
    c->add_option("--fashion-mnist-test", maps.fashion_mnist_test, "Fashion-MNIST test images by index, e.g. 0,1,2")
        ->delimiter(',');
    c->add_option("--fashion-mnist", maps.fashion_mnist_root,
                  std::string("Fashion-MNIST folder (default ") + kDefaultFashionMnistRoot + ")");
    c->add_option("--query", maps.queries,
                  "query patch: row-major index N or ROW,COL (repeatable; default: centre, upper left, upper right, "
                  "lower middle)");
    c->add_flag("--bidirectional", maps.bidirectional,
                "attend bidirectionally (as fine-tuning does) instead of the config's is_causal");
    c->add_option("--scale", maps.scale, "enlarge the images this many times (default: to at least 224 px)");
    c->add_option("--output", maps.output, "the figure (.png)")->required();
  }
  attention_cmd->add_option("--layer", maps.layer, "block index (0-based; default -1: the last)");
  attention_cmd->add_flag("--per-head", maps.per_head, "one panel per head instead of the mean over heads");

  if (auto code = parse_command_line(app, argc, argv)) return *code;
  spdlog::set_pattern("[%H:%M:%S] %v");
  try {
    if (*info_cmd) return info(info_path);
    if (*fwd) return forward(model_path, weights, input, output, bidirectional);
    if (*attention_cmd || *similarity_cmd) {
      if (*attention_cmd) run_attention_map(maps);
      else run_similarity_map(maps);
      return 0;
    }
    if (*scenes_cmd) {
      try {
        check_scene_options(scenes);
      } catch (const std::invalid_argument& e) {
        std::cerr << "nepa_tool: " << e.what() << " (see make-scenes --help)\n";
        return 2;
      }
      return make_scenes(fashion_mnist, scenes_out, scenes);
    }
    LoadedConfig loaded = load_config(config_path, sets);
    if (*cfg_cmd) {
      std::cout << to_yaml(loaded.config);
      return 0;
    }
    return init(loaded.config, output);
  } catch (const MapInputError& e) {
    std::cerr << "nepa_tool: " << e.what() << "\n";
    return 2;
  } catch (const ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const c10::Error& e) {
    std::cerr << "error: " << e.what_without_backtrace() << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
