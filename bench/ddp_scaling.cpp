// bench_ddp_scaling: data-parallel scaling on this machine. The same pretraining step (forward, NEPA loss,
// backward with the library's GradSync all-reduce, AdamW) in 1 process and in 2 processes (Gloo over loopback),
// each process with ONE intra-op thread and the same per-process batch (weak scaling), so that compute does
// not fight for cores. Prints throughput, scaling efficiency = img/s(2) / (2 x img/s(1)), and the share of the
// step spent waiting for all-reduces that backward did not hide.
//   build/bench/bench_ddp_scaling [--only tiny|vits] [--steps N] [--warmup N] [--bucket-mb MB]
// The program starts its own workers (itself, with RANK / WORLD_SIZE / MASTER_* set), as torchrun would.
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/dist/comm.h"
#include "nepa/dist/grad_sync.h"
#include "nepa/dist/launch.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/nepa_loss.h"
#include "nepa/train/optim.h"

using namespace nepa;
using Clock = std::chrono::steady_clock;

namespace {

struct Case {
  std::string name;
  ModelConfig model;
  int batch;  // per process
};

Case make_case(const std::string& which) {
  if (which == "vits") {
    ModelConfig m;  // ViT-S/16 at 224 with the NEPA-B recipe's other settings
    m.image_size = 224;
    m.patch_size = 16;
    m.hidden_size = 384;
    m.num_hidden_layers = 12;
    m.num_attention_heads = 6;
    m.intermediate_size = 1536;
    return {"ViT-S/16 224, 32 img/process", m, 32};
  }
  return {"fmnist_tiny 28, 128 img/process",
          load_config(std::string(NEPA_SOURCE_DIR) + "/configs/pretrain/fmnist_tiny.yaml").config.model, 128};
}

// One worker: prints "RESULT <median step s> <median wait s> <buckets>" on rank 0.
int worker(const std::string& which, int steps, int warmup, double bucket_mb) {
  torch::set_num_threads(1);
  DistConfig dc;
  dist::Launch launch = dist::launch_from_env(dc);
  std::unique_ptr<dist::Comm> comm =
      launch.distributed() ? std::make_unique<dist::Comm>(launch, "gloo", std::chrono::seconds(300))
                           : std::make_unique<dist::Comm>();
  Case c = make_case(which);
  torch::manual_seed(0);
  ViTNepaModel model(c.model);
  model->train();
  dist::broadcast_module_state(*comm, model->parameters());
  dist::GradSync sync(*comm, model->parameters(), bucket_mb);
  auto groups = decay_groups(*model, 0.05);
  OptimConfig oc;
  auto opt = make_adamw(groups, oc);
  torch::manual_seed(1 + launch.rank);
  torch::Tensor pixels = torch::rand({c.batch, c.model.num_channels, c.model.image_size, c.model.image_size}) * 2 - 1;
  ObjectiveConfig obj;
  std::vector<double> step_s, wait_s;
  for (int i = 0; i < warmup + steps; ++i) {
    comm->barrier();  // both processes start the step together: the step time is the slower one's
    auto t0 = Clock::now();
    NepaLoss l = nepa_forward_loss(model, pixels, obj);
    sync.begin(true);
    l.loss.backward();
    sync.finish();
    opt->step();
    opt->zero_grad();
    const double s = std::chrono::duration<double>(Clock::now() - t0).count();
    if (i >= warmup) {
      step_s.push_back(s);
      wait_s.push_back(sync.last_wait_seconds());
    }
  }
  std::sort(step_s.begin(), step_s.end());
  std::sort(wait_s.begin(), wait_s.end());
  if (comm->is_main())
    fmt::print("RESULT {} {} {}\n", step_s[step_s.size() / 2], wait_s[wait_s.size() / 2], sync.num_buckets());
  comm->barrier();
  return 0;
}

struct Result {
  double step = 0, wait = 0;
  long buckets = 0;
};

// Starts `n` workers of this program and returns rank 0's figures.
Result launch(const std::string& self, int n, const std::string& args) {
  const int port = 20000 + static_cast<int>(std::chrono::steady_clock::now().time_since_epoch().count() % 20000);
  std::vector<std::unique_ptr<FILE, int (*)(FILE*)>> pipes;
  for (int r = 0; r < n; ++r) {
    std::string env = n > 1 ? fmt::format("RANK={} WORLD_SIZE={} LOCAL_RANK={} LOCAL_WORLD_SIZE={} MASTER_ADDR=127.0.0.1 "
                                          "MASTER_PORT={} ", r, n, r, n, port)
                            : "";
    pipes.emplace_back(popen((env + self + " --worker " + args + " 2>&1").c_str(), "r"), pclose);
  }
  Result res;
  std::string all;
  for (auto& p : pipes) {
    char buf[4096];
    while (p && fgets(buf, sizeof(buf), p.get())) {
      all += buf;
      std::sscanf(buf, "RESULT %lf %lf %ld", &res.step, &res.wait, &res.buckets);
    }
  }
  if (res.step == 0) {
    fmt::print(stderr, "workers failed:\n{}\n", all);
    std::exit(1);
  }
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"data-parallel scaling: 1 vs 2 processes (Gloo, 1 thread each)"};
  std::string only, which = "tiny";
  int steps = 10, warmup = 2;
  double bucket_mb = 25.0;
  bool is_worker = false;
  app.add_option("--only", only, "one configuration")->check(CLI::IsMember({"tiny", "vits"}));
  app.add_option("--steps", steps, "timed steps (median reported)");
  app.add_option("--warmup", warmup, "untimed steps first");
  app.add_option("--bucket-mb", bucket_mb, "GradSync bucket size (dist.bucket_mb)");
  app.add_flag("--worker", is_worker, "(internal) run one process of the group");
  app.add_option("--case", which, "(internal) tiny | vits");
  CLI11_PARSE(app, argc, argv);
  if (is_worker) return worker(which, steps, warmup, bucket_mb);

  const std::string self = "/proc/self/exe";
  const std::string exe = std::filesystem::read_symlink(self).string();
  fmt::print("{:<32} {:>9} {:>9} {:>11} {:>11} {:>10} {:>8}\n", "config", "1 proc", "2 procs", "img/s 1", "img/s 2",
             "efficiency", "comm");
  for (const std::string w : {"tiny", "vits"}) {
    if (!only.empty() && only != w) continue;
    const Case c = make_case(w);
    const std::string args = fmt::format("--case {} --steps {} --warmup {} --bucket-mb {}", w, steps, warmup, bucket_mb);
    const Result one = launch(exe, 1, args), two = launch(exe, 2, args);
    const double ips1 = c.batch / one.step, ips2 = 2 * c.batch / two.step;
    fmt::print("{:<32} {:>7.0f}ms {:>7.0f}ms {:>11.1f} {:>11.1f} {:>9.1f}% {:>7.1f}%\n", c.name, 1e3 * one.step,
               1e3 * two.step, ips1, ips2, 100 * ips2 / (2 * ips1), 100 * two.wait / two.step);
    fmt::print("  ({} gradient buckets of <= {} MB; 'comm' = all-reduce wait not hidden behind backward, per step)\n",
               two.buckets, bucket_mb);
  }
  return 0;
}
