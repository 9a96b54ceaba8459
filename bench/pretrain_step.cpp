// bench_pretrain_step: one full NEPA pretraining step (forward, loss, backward, AdamW) in C++ against the same
// model in PyTorch eager (bench/pretrain_step.py, same weights, same threads), plus the machine's fp32 GEMM
// peak measured in the same run, so that MFU and the ratio come from one sitting.
//   build/bench/bench_pretrain_step [--threads N] [--steps N] [--warmup N] [--only tiny|vits] [--python PATH]
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <thread>

#include <unistd.h>

#include "nepa/config/config.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/nepa_loss.h"
#include "nepa/train/optim.h"

using namespace nepa;
namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace {

double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

// Matmul FLOPs of one forward pass per image (2 per multiply-add); backward counted as 2x forward. The causal
// attention is counted in full (T x T), the usual MFU convention, although SDPA may skip the masked half.
double forward_flops(const ModelConfig& m) {
  const double p = m.patch_size, n = (m.image_size / m.patch_size) * (m.image_size / m.patch_size), t = n + 1;
  const double d = m.hidden_size, f = m.intermediate_size;
  double patch = 2.0 * n * (m.num_channels * p * p) * d;
  double per_block = 2.0 * t * d * 3 * d        // q, k, v
                     + 2.0 * 2 * t * t * d        // scores and attention x values
                     + 2.0 * t * d * d            // output projection
                     + 2.0 * t * d * f * (m.use_gated_mlp ? 2 : 1) + 2.0 * t * f * d;  // MLP
  return patch + m.num_hidden_layers * per_block;
}

double gemm_peak() {
  torch::NoGradGuard g;
  auto a = torch::randn({4096, 1024}), b = torch::randn({1024, 1024});
  for (int i = 0; i < 3; ++i) torch::mm(a, b);
  double best = 1e9;
  for (int i = 0; i < 20; ++i) {
    auto t0 = Clock::now();
    torch::mm(a, b);
    best = std::min(best, secs(t0, Clock::now()));
  }
  return 2.0 * 4096 * 1024 * 1024 / best;
}

struct Timing {
  double img_per_s, forward_ms, backward_ms, optim_ms;
};

Timing time_cpp(const ModelConfig& mc, int batch, int steps, int warmup, const std::string& export_dir) {
  torch::manual_seed(0);
  ViTNepaModel model(mc);
  save_hf_model(export_dir, model, HfModelConfig{mc, {}, {}, {}});
  model->train();
  auto groups = decay_groups(*model, 0.05);
  OptimConfig oc;
  auto optim = make_adamw(groups, oc);
  for (auto& g : optim->param_groups()) static_cast<torch::optim::AdamWOptions&>(g.options()).lr(1e-4);
  ObjectiveConfig obj;
  torch::Tensor x = torch::randn({batch, mc.num_channels, mc.image_size, mc.image_size});
  std::vector<double> total, fwd, bwd, opt;
  for (int i = 0; i < warmup + steps; ++i) {
    auto t0 = Clock::now();
    NepaLoss loss = nepa_forward_loss(model, x, obj);
    auto t1 = Clock::now();
    optim->zero_grad();
    loss.loss.backward();
    auto t2 = Clock::now();
    optim->step();
    auto t3 = Clock::now();
    if (i < warmup) continue;
    total.push_back(secs(t0, t3));
    fwd.push_back(secs(t0, t1));
    bwd.push_back(secs(t1, t2));
    opt.push_back(secs(t2, t3));
  }
  auto median = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
  };
  return {batch / median(total), 1e3 * median(fwd), 1e3 * median(bwd), 1e3 * median(opt)};
}

// Runs the Python side and returns the number after `"key": ` in its JSON line.
double run_python(const std::string& cmd, const std::string& key) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("cannot run " + cmd);
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof(buf), pipe.get())) out += buf;
  auto pos = out.find("\"" + key + "\": ");
  if (pos == std::string::npos) throw std::runtime_error("unexpected output of " + cmd + ":\n" + out);
  return std::stod(out.substr(pos + key.size() + 4));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"NEPA pretraining step: C++ vs PyTorch eager"};
  int threads = static_cast<int>(std::thread::hardware_concurrency()), steps = 10, warmup = 3;
  std::string only, python = std::getenv("NEPA_PYTHON") ? std::getenv("NEPA_PYTHON") : "";
  if (python.empty()) python = std::string(std::getenv("HOME")) + "/.cache/nepa/venv/bin/python";
  app.add_option("--threads", threads, "intra-op threads for both sides");
  app.add_option("--steps", steps, "timed steps (median reported)");
  app.add_option("--warmup", warmup, "untimed steps first");
  app.add_option("--only", only, "tiny | vits");
  app.add_option("--python", python, "Python with torch + safetensors");
  CLI11_PARSE(app, argc, argv);
  torch::set_num_threads(threads);
  const std::string script = std::string(NEPA_SOURCE_DIR) + "/bench/pretrain_step.py";

  struct Case {
    std::string name;
    ModelConfig model;
    int batch;
  };
  ModelConfig vits;  // ViT-S/16 at 224, otherwise the NEPA-B recipe (QK-Norm, LayerScale, RoPE)
  vits.patch_size = 16;
  vits.hidden_size = 384;
  vits.num_attention_heads = 6;
  vits.intermediate_size = 1536;
  ModelConfig tiny = load_config(std::string(NEPA_SOURCE_DIR) + "/configs/pretrain/fmnist_tiny.yaml").config.model;
  std::vector<Case> cases;
  if (only.empty() || only == "tiny") cases.push_back({"tiny (fmnist_tiny.yaml) b128", tiny, 128});
  if (only.empty() || only == "vits") cases.push_back({"ViT-S/16 224px b32", vits, 32});

  const double peak_cpp = gemm_peak();
  const double peak_py =
      1e9 * run_python(fmt::format("{} {} gemm --threads {}", python, script, threads), "gflops");
  fmt::print("fp32 GEMM peak ({} threads, 4096x1024 @ 1024x1024): LibTorch {:.0f} GFLOP/s, PyTorch {:.0f} GFLOP/s\n",
             threads, peak_cpp / 1e9, peak_py / 1e9);
  fmt::print("{:<30} {:>10} {:>10} {:>7} {:>8} {:>8}   C++ forward / backward / AdamW ms\n", "config", "C++ img/s",
             "eager", "ratio", "C++ MFU", "eager");
  fs::path dir = fs::temp_directory_path() / ("nepa_bench_" + std::to_string(::getpid()));
  for (const auto& c : cases) {
    fs::path model_dir = dir / (c.name.substr(0, 4));
    Timing t = time_cpp(c.model, c.batch, steps, warmup, model_dir.string());
    double eager = run_python(fmt::format("{} {} step {} --threads {} --batch {} --steps {} --warmup {} --check", python,
                                          script, model_dir.string(), threads, c.batch, steps, warmup),
                              "img_per_s");
    double flops = 3.0 * forward_flops(c.model);
    fmt::print("{:<30} {:>10.1f} {:>10.1f} {:>6.2f}x {:>7.1f}% {:>7.1f}%   {:.1f} / {:.1f} / {:.1f}\n", c.name,
               t.img_per_s, eager, t.img_per_s / eager, 100 * t.img_per_s * flops / peak_cpp,
               100 * eager * flops / peak_cpp, t.forward_ms, t.backward_ms, t.optim_ms);
  }
  fs::remove_all(dir);
  return 0;
}
