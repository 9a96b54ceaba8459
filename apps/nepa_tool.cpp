// nepa_tool: checkpoint inspection, reference forward passes, config printing and the Fashion-MNIST smoke
// run. Wiring only: everything it does lives in the nepa library.
#include <CLI/CLI.hpp>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <thread>

#include "nepa/config/config.h"
#include "nepa/config/hf_config.h"
#include "nepa/data/fashion_mnist.h"
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

// Pixels [B, H, W] uint8 -> normalised [B, C, H, W] float.
torch::Tensor to_pixels(const torch::Tensor& images, const DataConfig& d) {
  torch::Tensor x = images.to(torch::kFloat32).div_(255.0).unsqueeze(1);
  if (d.num_channels == 3) x = x.expand({-1, 3, -1, -1});
  auto mean = torch::tensor(d.mean, torch::kFloat32).view({1, -1, 1, 1});
  auto std = torch::tensor(d.std, torch::kFloat32).view({1, -1, 1, 1});
  return ((x - mean) / std).contiguous();
}

double eval_loss(ViTNepaModel& model, const torch::Tensor& pixels, const ObjectiveConfig& obj) {
  torch::NoGradGuard g;
  model->eval();
  double sum = 0;
  int64_t n = 0;
  for (int64_t i = 0; i < pixels.size(0); i += 256) {
    torch::Tensor x = pixels.narrow(0, i, std::min<int64_t>(256, pixels.size(0) - i));
    sum += nepa_forward_loss(model, x, obj).loss.item<double>() * x.size(0);
    n += x.size(0);
  }
  model->train();
  return sum / n;
}

// Until nepa_pretrain lands: a short real NEPA optimisation on Fashion-MNIST, showing the model, the
// loss and the exporter working end to end on the embedded data.
int smoke(const LoadedConfig& loaded, int steps) {
  const Config& cfg = loaded.config;
  torch::manual_seed(cfg.train.seed);
  int threads = cfg.train.threads > 0 ? cfg.train.threads : static_cast<int>(std::thread::hardware_concurrency());
  torch::set_num_threads(threads);
  auto train = load_fashion_mnist(cfg.data.root, cfg.data.split);
  auto test = load_fashion_mnist(cfg.data.root, cfg.data.eval_split);
  torch::Tensor test_pixels = to_pixels(test.images.narrow(0, 0, 2000), cfg.data);
  spdlog::info("fashion-mnist: {} train / {} test images, {} threads", train.images.size(0), test.images.size(0),
               threads);

  ViTNepaModel model(cfg.model);
  model->train();
  spdlog::info("model: {} parameters, {} blocks, width {}", count_parameters(*model), cfg.model.num_hidden_layers,
               cfg.model.hidden_size);
  std::vector<torch::Tensor> decay, no_decay;  // matrices, kernels and the CLS token decay; vectors do not
  for (auto& p : model->parameters()) (p.dim() >= 2 ? decay : no_decay).push_back(p);
  double lr = cfg.optim.base_lr * cfg.train.micro_batch / cfg.optim.lr_batch_reference;
  auto opts = torch::optim::AdamWOptions(lr)
                  .betas({cfg.optim.betas[0], cfg.optim.betas[1]})
                  .eps(cfg.optim.eps)
                  .weight_decay(cfg.optim.weight_decay);
  auto no_decay_opts = std::make_unique<torch::optim::AdamWOptions>(opts);
  no_decay_opts->weight_decay(0.0);
  torch::optim::AdamW optim({torch::optim::OptimizerParamGroup(decay, std::make_unique<torch::optim::AdamWOptions>(opts)),
                             torch::optim::OptimizerParamGroup(no_decay, std::move(no_decay_opts))},
                            opts);

  double before = eval_loss(model, test_pixels, cfg.objective);
  spdlog::info("test NEPA loss at init: {:.4f}", before);
  auto t0 = std::chrono::steady_clock::now();
  int64_t b = cfg.train.micro_batch;
  for (int step = 1; step <= steps; ++step) {
    torch::Tensor idx = torch::randint(train.images.size(0), {b}, torch::kInt64);
    torch::Tensor x = to_pixels(train.images.index_select(0, idx), cfg.data);
    NepaLoss loss = nepa_forward_loss(model, x, cfg.objective);
    optim.zero_grad();
    loss.loss.backward();
    optim.step();
    if (step % cfg.log.log_every == 0 || step == steps) {
      double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
      spdlog::info("step {}/{} loss {:.4f} cos {:.4f} pred_std {:.4f} lr {:.2e} {:.0f} img/s", step, steps,
                   loss.loss.item<double>(), loss.mean_cos.item<double>(), loss.pred_std.item<double>(), lr,
                   step * b / secs);
    }
  }
  double after = eval_loss(model, test_pixels, cfg.objective);
  fs::path out = cfg.train.output_dir;
  fs::create_directories(out);
  save_config(cfg, (out / "config.yaml").string());
  save_hf_model((out / "final").string(), model, HfModelConfig{cfg.model, {}, {}, {}});
  spdlog::info("test NEPA loss: {:.4f} at init -> {:.4f} after {} steps (lower bound -1)", before, after, steps);
  spdlog::info("run directory: {} (config.yaml, final/model.safetensors + config.json)", out.string());
  return after < before ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"nepa_tool: inspect checkpoints, run reference forwards, print configs, smoke-test NEPA"};
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
  int steps = 300;
  auto* cfg_cmd = app.add_subcommand("config", "print the effective, documented config");
  auto* smoke_cmd = app.add_subcommand("smoke", "short NEPA optimisation on Fashion-MNIST");
  auto* init_cmd = app.add_subcommand("init", "write a freshly initialised backbone (model.safetensors + config.json)");
  init_cmd->add_option("--output", output, "output folder")->required();
  for (auto* c : {cfg_cmd, smoke_cmd, init_cmd}) {
    c->add_option("--config", config_path, "experiment YAML")->required();
    c->add_option("--set", sets, "override, e.g. --set model.num_hidden_layers=6 (repeatable)");
  }
  smoke_cmd->add_option("--steps", steps, "optimizer steps");

  CLI11_PARSE(app, argc, argv);
  spdlog::set_pattern("[%H:%M:%S] %v");
  try {
    if (*info_cmd) return info(info_path);
    if (*fwd) return forward(model_path, weights, input, output, bidirectional);
    LoadedConfig loaded = load_config(config_path, sets);
    if (*cfg_cmd) {
      std::cout << to_yaml(loaded.config);
      return 0;
    }
    if (*init_cmd) return init(loaded.config, output);
    return smoke(loaded, steps);
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
