// bench_pretrain_step: one full NEPA pretraining step (forward, loss, backward, AdamW) in C++ against the same
// model in PyTorch eager (bench/pretrain_step.py on the weights this program writes, same threads, same batch),
// with the machine's fp32 GEMM peak measured in the same run, so that the ratio and the MFU come from one sitting.
//   bench_pretrain_step [--threads N] [--steps N] [--warmup N] [--only tiny|vits|vitb] [--batch B]
//                       [--device cpu|cuda] [--precision fp32|bf16] [--python PATH]
//                       [--no-eager] [--no-check] [--profile] [--malloc-tune] [--seed S]
// --precision bf16 runs both sides under bf16 autocast (the trainer's AutocastScope here, torch.autocast there).
// On a GPU every phase ends with a device synchronisation on both sides, so that the phase times are the
// device's; --profile then lists the CUDA kernels of one step of each side (time, launches).
//
// The two sides alternate step by step (the Python process stays up and steps on request), so background load
// that comes and goes lands on both of them instead of on whichever happened to run second.
//
// FLOP convention (the usual MFU one): matmul FLOPs only, 2 per multiply-add: patch-embedding conv, q/k/v,
// QK^T and PV over the FULL T x T (the causal half that the flash kernel skips is still counted), output
// projection, MLP; backward = 2x forward (also for the patch embedding, whose input gradient is not actually
// computed); LayerNorm, GELU, RoPE, softmax, loss and AdamW count as zero. MFU = achieved FLOP/s / measured fp32
// GEMM peak, the peak being the best of LibTorch's and PyTorch's measurements over kGemmShapes (on a GPU: the
// device's peak in the step's precision, over kCudaGemmShapes, measured by LibTorch).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <malloc.h>
#include <spawn.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <limits>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "nepa/config/config.h"
#include "nepa/io/hf_checkpoint.h"
#include "nepa/model/vit_nepa.h"
#include "nepa/objective/nepa_loss.h"
#include "nepa/train/autocast.h"
#include "nepa/train/optim.h"
#include "bench_util.h"

extern char** environ;

using namespace nepa;
namespace fs = std::filesystem;
using bench::Clock;
using bench::median;
using bench::secs;

namespace {

// Same list as GEMM_SHAPES in pretrain_step.py.
const std::vector<std::array<int64_t, 3>> kGemmShapes = {{2048, 2048, 2048}, {32 * 197, 384, 1536}, {32 * 197, 1536, 384}};
// On a GPU: a large square product and the ViT-B/14 MLP products at batch 64 (257 tokens).
const std::vector<std::array<int64_t, 3>> kCudaGemmShapes = {
    {8192, 8192, 8192}, {64 * 257, 768, 3072}, {64 * 257, 3072, 768}};
constexpr double kLr = 1e-4, kWeightDecay = 0.05;
// glibc serves blocks above the (at most 32 MiB) mmap threshold with a fresh mmap and returns them on free, so
// every large activation is page-faulted and zeroed by the kernel again on every step. No mmap and no trimming
// keeps those pages in the process. The same setting for the Python child goes through its environment.
constexpr const char* kMallocTunables = "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736";

struct FlopCount {
  double forward_per_image = 0, step = 0;
};

FlopCount count_flops(const ModelConfig& m, int batch) {
  const double p = m.patch_size, n = static_cast<double>(m.image_size / m.patch_size) * (m.image_size / m.patch_size);
  const double t = n + 1, d = m.hidden_size, f = m.intermediate_size;
  const double patch = 2 * n * (m.num_channels * p * p) * d;
  const double qkv = 3 * 2 * t * d * d;
  const double attention = 2 * (2 * t * t * d);  // QK^T and PV over all heads (heads x head_dim = d)
  const double proj = 2 * t * d * d;
  const double mlp = 2 * t * d * f * (m.use_gated_mlp ? 2 : 1) + 2 * t * f * d;
  FlopCount c;
  c.forward_per_image = patch + m.num_hidden_layers * (qkv + attention + proj + mlp);
  c.step = 3 * c.forward_per_image * batch;
  return c;
}

// One step's timings (ms) plus what the kernel charged for it: minor page faults and system CPU time.
struct Sample {
  double step = 0, forward = 0, backward = 0, optim = 0, minflt = 0, sys_ms = 0, loss = 0;
};

struct Summary {
  double step = 0, forward = 0, backward = 0, optim = 0, minflt = 0, sys_ms = 0;
  static Summary of(const std::vector<Sample>& s) {
    auto med = [&](double Sample::*field) {
      std::vector<double> v;
      for (const auto& x : s) v.push_back(x.*field);
      return median(v);
    };
    return {med(&Sample::step),   med(&Sample::forward), med(&Sample::backward),
            med(&Sample::optim),  med(&Sample::minflt),  med(&Sample::sys_ms)};
  }
};

struct Usage {
  double minflt, sys_s;
  static Usage now() {
    rusage r{};
    getrusage(RUSAGE_SELF, &r);
    return {static_cast<double>(r.ru_minflt), r.ru_stime.tv_sec + r.ru_stime.tv_usec * 1e-6};
  }
};

// One profiled step's CUDA kernels: total kernel time against the step's wall time (the rest is the device
// idling, mostly waiting for launches), launches, and the kernels by time. `kernels`: name -> (ms, launches).
void print_kernels(const std::string& side, double step_ms, const std::map<std::string, std::pair<double, int>>& kernels) {
  std::vector<std::pair<std::string, std::pair<double, int>>> rows(kernels.begin(), kernels.end());
  std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
  double total = 0;
  int launches = 0;
  for (const auto& [name, v] : rows) {
    total += v.first;
    launches += v.second;
  }
  fmt::print("  profiled {} step: {:.1f} ms wall, {:.1f} ms of kernels ({:.0f}% busy), {} kernel launches\n", side,
             step_ms, total, 100 * total / step_ms, launches);
  fmt::print("  {:<90} {:>8} {:>6} {:>6}\n", "kernel", "ms", "%", "calls");
  for (size_t i = 0; i < std::min<size_t>(rows.size(), 25); ++i)
    fmt::print("  {:<90} {:>8.2f} {:>5.1f}% {:>6}\n", rows[i].first.substr(0, 90), rows[i].second.first,
               100 * rows[i].second.first / total, rows[i].second.second);
}

// The C++ side: the library's model, objective and optimizer exactly as the trainer builds them.
class CppStepper {
 public:
  CppStepper(const ModelConfig& mc, int batch, uint64_t seed, const fs::path& export_dir, const torch::Device& device,
             bool bf16)
      : model_(nullptr), device_(device), bf16_(bf16) {
    torch::manual_seed(seed);
    model_ = ViTNepaModel(mc);
    save_hf_model(export_dir.string(), model_, HfModelConfig{mc, {}, {}, {}});
    model_->to(device_);
    model_->train();
    groups_ = decay_groups(*model_, kWeightDecay);
    optim_ = make_adamw(groups_, oc_);
    for (size_t g = 0; g < optim_->num_groups(); ++g) optim_->set_lr(g, kLr);
    pixels_ = (torch::rand({batch, mc.num_channels, mc.image_size, mc.image_size}) * 2 - 1).to(device_);
  }

  Sample step() {
    auto sync = [&] {
      if (device_.is_cuda()) torch::cuda::synchronize();
    };
    Usage u0 = Usage::now();
    auto t0 = Clock::now();
    NepaLoss loss = [&] {
      AutocastScope autocast(bf16_, device_.type());
      return nepa_forward_loss(model_, pixels_, objective_);
    }();
    sync();
    auto t1 = Clock::now();
    optim_->zero_grad();
    loss.loss.backward();
    sync();
    auto t2 = Clock::now();
    optim_->step();
    sync();
    auto t3 = Clock::now();
    Usage u1 = Usage::now();
    double value = loss.loss.item<double>();
    ++steps_;
    if (!std::isfinite(value))
      throw std::runtime_error(fmt::format("C++ side: non-finite loss {} at step {}", value, steps_));
    return {1e3 * secs(t0, t3), 1e3 * secs(t0, t1), 1e3 * secs(t1, t2), 1e3 * secs(t2, t3),
            u1.minflt - u0.minflt,  1e3 * (u1.sys_s - u0.sys_s), value};
  }

  // One step under the Kineto profiler; ops by self CPU time, from the event nesting on the calling thread
  // (autograd runs a CPU-only backward on the thread that calls backward(), so one stack covers both passes).
  void print_profile() {
    namespace prof = torch::autograd::profiler;
    using torch::profiler::impl::ActivityType;
    using torch::profiler::impl::ProfilerConfig;
    using torch::profiler::impl::ProfilerState;
    std::set<ActivityType> activities = {ActivityType::CPU};
    if (device_.is_cuda()) activities.insert(ActivityType::CUDA);
    prof::prepareProfiler(ProfilerConfig(ProfilerState::KINETO), activities);
    prof::enableProfiler(ProfilerConfig(ProfilerState::KINETO), activities);
    Sample s = step();
    auto result = prof::disableProfiler();
    if (device_.is_cuda()) {
      std::map<std::string, std::pair<double, int>> kernels;
      for (const auto& e : result->events())
        if (e.deviceType() == c10::DeviceType::CUDA && e.endNs() > e.startNs()) {
          auto& k = kernels[e.name()];
          k.first += (e.endNs() - e.startNs()) * 1e-6;
          k.second += 1;
        }
      print_kernels("C++", s.step, kernels);
      return;
    }

    struct Ev {
      std::string name;
      uint64_t start, end, thread;
    };
    std::vector<Ev> evs;
    for (const auto& e : result->events())
      if (e.deviceType() == c10::DeviceType::CPU && e.endNs() > e.startNs())
        evs.push_back({e.name(), e.startNs(), e.endNs(), e.startThreadId()});
    // Parents before children: by thread, then start, then the longer first.
    std::sort(evs.begin(), evs.end(), [](const Ev& a, const Ev& b) {
      if (a.thread != b.thread) return a.thread < b.thread;
      if (a.start != b.start) return a.start < b.start;
      return a.end > b.end;
    });
    std::map<std::string, std::pair<double, int>> self;  // name -> (self seconds, calls)
    std::vector<std::pair<const Ev*, double>> stack;      // open event, time spent in its direct children
    auto pop_until = [&](const Ev* next) {
      while (!stack.empty() &&
             (!next || stack.back().first->thread != next->thread || stack.back().first->end <= next->start)) {
        auto [e, children] = stack.back();
        stack.pop_back();
        double dur = (e->end - e->start) * 1e-9;
        auto& acc = self[e->name];
        acc.first += dur - children;
        acc.second += 1;
        if (!stack.empty() && stack.back().first->thread == e->thread) stack.back().second += dur;
      }
    };
    for (const auto& e : evs) {
      pop_until(&e);
      stack.push_back({&e, 0.0});
    }
    pop_until(nullptr);

    std::vector<std::pair<std::string, std::pair<double, int>>> rows(self.begin(), self.end());
    std::sort(rows.begin(), rows.end(), [](const auto& a, const auto& b) { return a.second.first > b.second.first; });
    double total = 0, gemm = 0, attention = 0;
    for (const auto& [name, v] : rows) {
      total += v.first;
      if (name == "aten::mm" || name == "aten::addmm" || name == "aten::bmm" || name == "aten::mkldnn_convolution" ||
          name == "aten::convolution_backward")
        gemm += v.first;
      if (name.find("scaled_dot_product") != std::string::npos) attention += v.first;
    }
    fmt::print("  profiled C++ step: {:.0f} ms wall, {:.0f} ms in ops: GEMM/conv {:.0f}%, SDPA {:.0f}%, rest {:.0f}%; "
               "{:.0f} page faults, {:.0f} ms system CPU\n",
               s.step, 1e3 * total, 100 * gemm / total, 100 * attention / total,
               100 * (1 - (gemm + attention) / total), s.minflt, s.sys_ms);
    fmt::print("  {:<60} {:>9} {:>6} {:>6}\n", "op (self CPU time)", "ms", "%", "calls");
    for (size_t i = 0; i < std::min<size_t>(rows.size(), 20); ++i)
      fmt::print("  {:<60} {:>9.1f} {:>5.1f}% {:>6}\n", rows[i].first.substr(0, 60), 1e3 * rows[i].second.first,
                 100 * rows[i].second.first / total, rows[i].second.second);
  }

 private:
  ViTNepaModel model_;
  torch::Device device_;
  bool bf16_;
  OptimConfig oc_;
  ObjectiveConfig objective_;
  std::vector<ParamGroup> groups_;
  std::unique_ptr<AdamW> optim_;
  torch::Tensor pixels_;
  int steps_ = 0;
};

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// Runs `cmd` and parses the last line of its stdout as JSON (yaml-cpp reads JSON). stderr passes through.
YAML::Node run_json(const std::string& cmd) {
  std::unique_ptr<FILE, int (*)(FILE*)> pipe(popen(cmd.c_str(), "r"), pclose);
  if (!pipe) throw std::runtime_error("cannot start: " + cmd);
  std::string out;
  char buf[4096];
  while (fgets(buf, sizeof(buf), pipe.get())) out += buf;
  int status = pclose(pipe.release());
  while (!out.empty() && out.back() == '\n') out.pop_back();
  size_t nl = out.rfind('\n');
  std::string last = out.substr(nl == std::string::npos ? 0 : nl + 1);
  if (status != 0 || last.empty() || last[0] != '{')
    throw std::runtime_error(fmt::format("{} failed (status {}):\n{}", cmd, status, out));
  return YAML::Load(last);
}

// `pretrain_step.py serve`: a line "step" in, one JSON line out.
Sample python_step(bench::JsonChild& py) {
  const YAML::Node j = py.call("step");
  return {j["step_ms"].as<double>(), j["forward_ms"].as<double>(), j["backward_ms"].as<double>(),
          j["optim_ms"].as<double>(), j["minflt"].as<double>(),   j["sys_ms"].as<double>(),
          j["loss"].as<double>()};
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"NEPA pretraining step (forward, loss, backward, AdamW): C++ vs PyTorch eager, images/s and MFU"};
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int steps = 10, warmup = 3, gemm_reps = 10;
  uint64_t seed = 0;
  int batch_override = 0;
  std::string only, python = bench::default_python(), device_name = "cpu", precision = "fp32";
  bool no_eager = false, no_check = false, profile = false, malloc_tune = false;
  app.add_option("--threads", threads, "intra-op threads for both sides (default: all cores)")->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed steps per side; medians are reported")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed steps per side first")->check(CLI::NonNegativeNumber);
  app.add_option("--only", only, "run one configuration (vitb: ViT-B/14 224 b64, only with --only)")
      ->check(CLI::IsMember({"tiny", "vits", "vitb"}));
  app.add_option("--batch", batch_override, "batch of every configuration run (default: its own)")
      ->check(CLI::PositiveNumber);
  app.add_option("--device", device_name, "cpu or cuda (both sides)")->check(CLI::IsMember({"cpu", "cuda"}));
  app.add_option("--precision", precision, "fp32, or bf16 autocast on both sides")->check(CLI::IsMember({"fp32", "bf16"}));
  app.add_option("--python", python, "Python with torch + safetensors (default: $NEPA_PYTHON or ~/.cache/nepa/venv)");
  app.add_option("--seed", seed, "seed of the weights and the input batch");
  app.add_option("--gemm-reps", gemm_reps, "repetitions per GEMM shape (best kept)")->check(CLI::PositiveNumber);
  app.add_flag("--no-eager", no_eager, "C++ side only (no Python)");
  app.add_flag("--no-check", no_check, "skip the eager-vs-float64-reference check");
  app.add_flag("--profile", profile, "after timing, profile one C++ step and print the ops by self time");
  app.add_flag("--malloc-tune", malloc_tune,
               "both sides: keep freed memory in the process (glibc: no mmap, no trim) instead of re-faulting it");
  CLI11_PARSE(app, argc, argv);

  if (malloc_tune) {
    mallopt(M_MMAP_MAX, 0);
    mallopt(M_TRIM_THRESHOLD, std::numeric_limits<int>::max());
  }
  const torch::Device device(device_name);
  if (device.is_cuda() && !torch::cuda::is_available()) {
    fmt::print(stderr, "error: --device cuda, but LibTorch sees no CUDA device\n");
    return 2;
  }
  const bool bf16 = precision == "bf16";
  torch::set_num_threads(threads);
  const std::string source_dir = NEPA_SOURCE_DIR;
  const std::string script = source_dir + "/bench/pretrain_step.py";
  std::vector<std::string> child_env;
  if (malloc_tune) child_env.push_back(std::string("GLIBC_TUNABLES=") + kMallocTunables);

  struct Case {
    std::string key, label;
    ModelConfig model;
    int batch;
  };
  // ViT-S/16 at 224 with the rest of the NEPA-B recipe (QK-Norm, LayerScale, RoPE + rescale, causal, GELU).
  ModelConfig vits;
  vits.image_size = 224;
  vits.patch_size = 16;
  vits.hidden_size = 384;
  vits.num_hidden_layers = 12;
  vits.num_attention_heads = 6;
  vits.intermediate_size = 1536;
  ModelConfig tiny = load_config(source_dir + "/configs/pretrain/fmnist_tiny.yaml").config.model;
  std::vector<Case> cases;
  if (only.empty() || only == "vits") cases.push_back({"vits", "ViT-S/16 224 b32", vits, 32});
  if (only.empty() || only == "tiny") cases.push_back({"tiny", "fmnist_tiny 28 b128", tiny, 128});
  if (only == "vitb")  // the paper's model (configs/model/nepa_base.yaml): a GPU shape, too slow for the CPU default
    cases.push_back({"vitb", "ViT-B/14 224 b64",
                     load_config(source_dir + "/configs/pretrain/vitb.yaml").config.model, 64});
  for (auto& c : cases)
    if (batch_override) {
      c.batch = batch_override;
      c.label = c.label.substr(0, c.label.rfind(" b")) + " b" + std::to_string(batch_override);
    }

  const auto gemm_dtype = bf16 ? torch::kBFloat16 : torch::kFloat32;
  bench::GemmPeak peak_cpp = bench::gemm_peak(device.is_cuda() ? kCudaGemmShapes : kGemmShapes, gemm_reps,
                                              torch::TensorOptions().device(device).dtype(gemm_dtype));
  std::optional<bench::GemmPeak> peak_py;
  if (!no_eager && !device.is_cuda() && !bf16) {  // the Python peak: fp32 on the CPU only
    std::string env = malloc_tune ? std::string("GLIBC_TUNABLES=") + kMallocTunables + " " : "";
    YAML::Node j = run_json(fmt::format("{}{} {} gemm --threads {} --reps {}", env, shell_quote(python),
                                        shell_quote(script), threads, gemm_reps));
    peak_py.emplace();
    peak_py->best = j["gflops"].as<double>();
    for (const auto& kv : j["shapes"]) peak_py->per_shape[kv.first.as<std::string>()] = kv.second.as<double>();
  }
  const double peak = std::max(peak_cpp.best, peak_py ? peak_py->best : 0.0);
  fmt::print("device {}, {}, threads {}{} | {} GEMM GFLOP/s, best of {} (LibTorch{}):\n", device.str(), precision,
             threads, malloc_tune ? ", malloc tuned" : "", bf16 ? "bf16" : "fp32", gemm_reps,
             peak_py ? " / PyTorch" : "");
  for (const auto& [shape, g] : peak_cpp.per_shape)
    fmt::print("  {:<16} {:6.1f}{}\n", shape, g, peak_py ? fmt::format(" / {:6.1f}", peak_py->per_shape[shape]) : "");
  fmt::print("  peak used for MFU: {:.1f} GFLOP/s\n", peak);

  fs::path dir = fs::temp_directory_path() / fmt::format("nepa_bench_pretrain_step_{}", ::getpid());
  struct Row {
    Case c;
    FlopCount flops;
    Summary cpp;
    std::optional<Summary> eager;
  };
  std::vector<Row> rows;
  int rc = 0;
  try {
    for (const auto& c : cases) {
      Row r{c, count_flops(c.model, c.batch), {}, std::nullopt};
      fmt::print("\n[{}] forward {:.3f} GFLOP/image, step {:.1f} GFLOP; {} warmup + {} timed steps per side{}\n",
                 c.label, r.flops.forward_per_image / 1e9, r.flops.step / 1e9, warmup, steps,
                 no_eager ? "" : ", alternating C++ / eager");
      std::fflush(stdout);
      fs::path model_dir = dir / c.key;
      CppStepper cpp(c.model, c.batch, seed, model_dir, device, bf16);
      std::unique_ptr<bench::JsonChild> py;
      if (!no_eager) {
        std::vector<std::string> cmd = {python, script, "serve", model_dir.string(), "--threads",
                                        std::to_string(threads), "--batch", std::to_string(c.batch), "--seed",
                                        std::to_string(seed), "--device", device_name, "--precision", precision};
        if (!no_check) cmd.push_back("--check");
        py = std::make_unique<bench::JsonChild>(cmd, child_env);
        if (const auto& chk = py->header()["check"])
          fmt::print("[{}] eager vs float64 reference (eval mode), max |diff|: release init {:.2g}, LayerScale=1 {:.2g}\n",
                     c.label, chk["release init"].as<double>(), chk["LayerScale=1"].as<double>());
        if (py->header()["threads"].as<int>() != threads)
          throw std::runtime_error("the Python side runs on a different number of threads");
      }
      std::vector<Sample> cpp_samples, py_samples;
      for (int i = 0; i < warmup + steps; ++i) {
        Sample a = cpp.step();
        if (i >= warmup) cpp_samples.push_back(a);
        if (py) {
          Sample b = python_step(*py);
          if (i >= warmup) py_samples.push_back(b);
        }
      }
      py.reset();
      r.cpp = Summary::of(cpp_samples);
      if (!no_eager) r.eager = Summary::of(py_samples);
      fmt::print("[{}] step ms, C++: {:.0f}", c.label, r.cpp.step);
      if (r.eager) fmt::print(", eager: {:.0f}", r.eager->step);
      fmt::print("; last loss C++ {:.4f}{}\n", cpp_samples.back().loss,
                 py_samples.empty() ? "" : fmt::format(", eager {:.4f}", py_samples.back().loss));
      if (profile) {
        cpp.print_profile();
        if (device.is_cuda() && !no_eager) {  // the same listing for one eager step (a fresh child: same model)
          std::vector<std::string> cmd = {python, script, "serve", model_dir.string(), "--threads",
                                          std::to_string(threads), "--batch", std::to_string(c.batch), "--seed",
                                          std::to_string(seed), "--device", device_name, "--precision", precision};
          bench::JsonChild prof_child(cmd, child_env);
          for (int i = 0; i < warmup; ++i) prof_child.call("step");
          const YAML::Node j = prof_child.call("profile");
          std::map<std::string, std::pair<double, int>> kernels;
          for (const auto& k : j["kernels"])
            kernels[k[0].as<std::string>()] = {k[1].as<double>(), k[2].as<int>()};
          print_kernels("eager", j["step_ms"].as<double>(), kernels);
        }
      }
      rows.push_back(r);
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    rc = 1;
  }
  std::error_code ec;
  fs::remove_all(dir, ec);
  if (rows.empty()) return rc;

  auto img_s = [](const Row& r, const Summary& s) { return r.c.batch / (s.step / 1e3); };
  auto mfu = [&](const Row& r, const Summary& s) { return 100.0 * (r.flops.step / (s.step / 1e3)) / (peak * 1e9); };
  fmt::print("\n{:<20} {:>10} {:>10} {:>7} {:>8} {:>8} {:>15}\n", "config", "C++ img/s", "eager", "ratio", "C++ MFU",
             "eager", "GEMM GFLOP/s");
  for (const auto& r : rows) {
    if (r.eager)
      fmt::print("{:<20} {:>10.1f} {:>10.1f} {:>6.2f}x {:>7.1f}% {:>7.1f}% {:>15.1f}\n", r.c.label, img_s(r, r.cpp),
                 img_s(r, *r.eager), r.eager->step / r.cpp.step, mfu(r, r.cpp), mfu(r, *r.eager), peak);
    else
      fmt::print("{:<20} {:>10.1f} {:>10} {:>7} {:>7.1f}% {:>8} {:>15.1f}\n", r.c.label, img_s(r, r.cpp), "-", "-",
                 mfu(r, r.cpp), "-", peak);
  }
  fmt::print("\nper step (medians)         {:>8} {:>8} {:>8} {:>7} {:>8} {:>8}\n", "step ms", "forward",
             "backward", "AdamW", "faults", "sys ms");
  auto line = [](const std::string& a, const std::string& b, const Summary& s) {
    fmt::print("{:<20} {:<5} {:>8.1f} {:>8.1f} {:>8.1f} {:>7.1f} {:>8.0f} {:>8.0f}\n", a, b, s.step, s.forward,
               s.backward, s.optim, s.minflt, s.sys_ms);
  };
  for (const auto& r : rows) {
    line(r.c.label, "C++", r.cpp);
    if (r.eager) line("", "eager", *r.eager);
  }
  fmt::print("forward includes the loss, backward includes zero_grad; C++ AdamW is the library's (ATen's fused kernel), "
             "eager's torch.optim.AdamW's default (foreach), as the release runs it;\nfaults = minor page faults, "
             "sys ms = kernel CPU time (all threads) per step.\n");
  return rc;
}
