// bench_seg_step: one UPerNet segmentation training step (backbone + pyramid + heads: forward, mmseg's loss,
// backward, AdamW) and slide inference of one 512x683 image, in C++ against the same model in PyTorch eager
// (bench/seg_step.py on the weights this program writes, same threads, same inputs), with the fp32 GEMM peak
// measured in the same run. The two sides alternate step by step, so load that comes and goes hits both.
//   bench_seg_step [--threads N] [--steps N] [--warmup N] [--infer-reps N] [--only tiny|vits] [--no-eager] [--profile]
//
// C++ = the library as nepa_seg runs it: NepaSegmenter(model, upernet_options, seg_out_indices), seg_cross_entropy
// on both heads (+ seg.aux_weight x aux), SegTask's layer-decay groups + make_adamw (lr per group from SegTask's
// schedule), segment_image with seg_eval_options. Configs: nepa_seg's own (fmnist_scenes.yaml; vitb_ade20k.yaml
// narrowed to ViT-S) with drop path, dropout and the RoPE training augmentations off, so that both sides compute
// the same thing: the first step's losses must agree to 1e-3 (relative) or the benchmark fails.
//
// FLOPs (as bench_pretrain_step): matmuls and convs only, 2 per multiply-add, attention over the full T x T, a
// 2x2/s2 transposed conv = one tap per output pixel, backward = 2x forward; MFU = FLOP/s / the fp32 GEMM peak
// (best of LibTorch and PyTorch over bench_pretrain_step's shapes).
#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <spawn.h>
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <thread>

#include "nepa/config/config.h"
#include "nepa/data/seg_transforms.h"
#include "nepa/eval/seg_evaluate.h"
#include "nepa/eval/segmentation.h"
#include "nepa/io/safetensors.h"
#include "nepa/model/segmenter.h"
#include "nepa/train/optim.h"
#include "nepa/train/seg_task.h"
#include "bench_util.h"

extern char** environ;

using namespace nepa;
namespace fs = std::filesystem;
using bench::Clock;
using bench::median;
using bench::secs;

namespace {

const std::vector<std::array<int64_t, 3>> kGemmShapes = {{2048, 2048, 2048}, {32 * 197, 384, 1536}, {32 * 197, 1536, 384}};
constexpr int kImageH = 512, kImageW = 683;  // the inference image (ADE20K-like; (2048, 512) resize is a no-op)
constexpr double kLossTolerance = 1e-3;


// Forward FLOPs of the segmenter on one [C, H, W] input (H, W multiples of the patch).
double forward_flops(const ModelConfig& m, const UPerNetOptions& o, int64_t height, int64_t width) {
  const double gh = height / m.patch_size, gw = width / m.patch_size, n = gh * gw, t = n + 1;
  const double d = m.hidden_size, f = m.intermediate_size, p = m.patch_size;
  const double block = 3 * 2 * t * d * d + 2 * (2 * t * t * d) + 2 * t * d * d +
                       2 * t * d * f * (m.use_gated_mlp ? 2 : 1) + 2 * t * f * d;
  double flops = 2 * n * (m.num_channels * p * p) * d + m.num_hidden_layers * block;
  const double n0 = 16 * n, n1 = 4 * n, n2 = n, n3 = std::floor(gh / 2) * std::floor(gw / 2);
  const double c = o.channels, a = o.aux_channels, k = o.num_classes;
  flops += 2 * n1 * d * d + 2 * n0 * d * d + 2 * n1 * d * d;  // fpn1 (two 2x2/s2 transposed convs), fpn2
  for (int64_t s : o.pool_scales) flops += 2.0 * s * s * d * c;
  flops += 2 * n3 * 9 * (d + o.pool_scales.size() * c) * c;  // PPM bottleneck
  flops += 2 * (n0 + n1 + n2) * (d * c + 9 * c * c);         // lateral 1x1 + FPN 3x3 convs
  flops += 2 * n0 * 9 * 4 * c * c + 2 * n0 * c * k;          // fused bottleneck + classifier
  flops += 2 * n2 * 9 * d * a + 2 * n2 * a * k;              // auxiliary FCN head
  return flops;
}

struct Sample {
  double step = 0, forward = 0, backward = 0, optim = 0, loss = 0;
};
Sample medians(const std::vector<Sample>& s) {
  auto med = [&](double Sample::*field) {
    std::vector<double> v;
    for (const auto& x : s) v.push_back(x.*field);
    return median(v);
  };
  return {med(&Sample::step), med(&Sample::forward), med(&Sample::backward), med(&Sample::optim), s.back().loss};
}
using OpTimes = std::map<std::string, std::pair<double, int>>;  // op -> (self ms, calls)

struct Case {
  std::string key, label;
  Config config;
  int64_t classes;
};

// nepa_seg's configs; drop path, dropout and the RoPE training augmentations off on both sides (see the top).
Case make_case(const std::string& key, const std::string& source_dir) {
  // clang-format off
  std::vector<std::string> sets = {"model.drop_path_prob=0", "model.hidden_dropout_prob=0", "seg.dropout=0",
      "model.attention_probs_dropout_prob=0", "model.pos_embed_rescale=null", "model.pos_embed_shift=null",
      "model.pos_embed_jitter=null", "train.device=cpu"};
  // clang-format on
  if (key == "tiny")
    return {key, "fmnist_scenes 56 b16", load_config(source_dir + "/configs/seg/fmnist_scenes.yaml", sets).config, 11};
  for (const char* s : {"model.hidden_size=384", "model.num_attention_heads=6", "model.intermediate_size=1536",
                        "seg.channels=384", "seg.aux_channels=256", "train.precision=fp32"})
    sets.push_back(s);
  return {key, "ViT-S/14 518 b2", load_config(source_dir + "/configs/seg/vitb_ade20k.yaml", sets).config, 150};
}

template <class T>
std::string json_list(const std::vector<T>& v) {
  return fmt::format("[{}]", fmt::join(v, ", "));
}

// The Kineto profiler's CPU events -> self time per op name (parents minus direct children, per thread).
OpTimes self_times(const torch::autograd::profiler::ProfilerResult& result) {
  struct Ev {
    std::string name;
    uint64_t start, end, thread;
  };
  std::vector<Ev> evs;
  for (const auto& e : result.events())
    if (e.deviceType() == c10::DeviceType::CPU && e.endNs() > e.startNs())
      evs.push_back({e.name(), e.startNs(), e.endNs(), e.startThreadId()});
  std::sort(evs.begin(), evs.end(), [](const Ev& a, const Ev& b) {
    if (a.thread != b.thread) return a.thread < b.thread;
    return a.start != b.start ? a.start < b.start : a.end > b.end;
  });
  OpTimes self;
  std::vector<std::pair<const Ev*, double>> stack;  // open event, ms in its direct children
  auto pop_until = [&](const Ev* next) {
    while (!stack.empty() &&
           (!next || stack.back().first->thread != next->thread || stack.back().first->end <= next->start)) {
      auto [e, children] = stack.back();
      stack.pop_back();
      const double dur = (e->end - e->start) * 1e-6;
      self[e->name].first += dur - children;
      self[e->name].second += 1;
      if (!stack.empty() && stack.back().first->thread == e->thread) stack.back().second += dur;
    }
  };
  for (const auto& e : evs) {
    pop_until(&e);
    stack.push_back({&e, 0.0});
  }
  pop_until(nullptr);
  return self;
}

// The C++ side: the library's segmenter, loss, groups, optimizer and inference as nepa_seg builds them.
class CppStepper {
 public:
  CppStepper(const Case& c, uint64_t seed, const fs::path& dir) : cfg_(c.config), model_(nullptr) {
    torch::manual_seed(seed);
    const UPerNetOptions head = upernet_options(cfg_, c.classes);
    model_ = NepaSegmenter(cfg_.model, head, seg_out_indices(cfg_));
    {
      // LayerScale 1 (a trained backbone's scale, not the release init's 1e-5), so that the blocks show in the loss.
      torch::NoGradGuard no_grad;
      for (auto& p : model_->named_parameters())
        if (p.key().size() > 7 && p.key().substr(p.key().size() - 7) == "lambda1") p.value().fill_(1.0);
    }
    const int64_t b = cfg_.train.micro_batch, s = cfg_.data.image_size, ch = cfg_.model.num_channels;
    pixels_ = torch::rand({b, ch, s, s}) * 2 - 1;
    labels_ = torch::randint(0, c.classes, {b, s, s}, torch::kInt64);
    labels_.masked_fill_(torch::rand({b, s, s}) < 0.1, 255);  // ~10 % ignored pixels
    image_ = torch::randint(0, 256, {kImageH, kImageW, ch}, torch::kUInt8);
    image_mat_ = cv::Mat(kImageH, kImageW, CV_8UC(static_cast<int>(ch)), image_.data_ptr<uint8_t>());

    std::vector<std::string> names;
    for (int64_t i = 0; i < c.classes; ++i) names.push_back(fmt::format("class_{}", i));
    save_segmenter(dir.string(), model_, cfg_, names);
    save_safetensors((dir / "inputs.safetensors").string(),
                     {{"pixels", pixels_}, {"labels", labels_}, {"image", image_}});

    SegTask task(cfg_, model_, nullptr, torch::kCPU);
    groups_ = task.param_groups();
    const int64_t total = cfg_.schedule.max_steps > 0 ? cfg_.schedule.max_steps : 160000;
    const auto schedule = task.make_schedule(cfg_, total);
    optim_ = make_adamw(groups_, cfg_.optim);
    std::vector<std::string> group_json;
    for (size_t g = 0; g < groups_.size(); ++g) {  // lr values at the end of the warmup: only their equality matters
      const double lr = schedule->lr(static_cast<int>(g), cfg_.seg.warmup_iters) * groups_[g].lr_scale;
      optim_->set_lr(g, lr);
      group_json.push_back(fmt::format(R"({{"params": {}, "weight_decay": {}, "lr": {}}})",
                                       fmt::format("[\"{}\"]", fmt::join(groups_[g].param_names, "\", \"")),
                                       groups_[g].weight_decay, lr));
    }
    eval_ = seg_eval_options(cfg_, torch::kCPU);
    std::ofstream(dir / "bench.json") << fmt::format(
        R"({{"out_indices": {}, "channels": {}, "aux_channels": {}, "classes": {}, "aux_weight": {}, )"
        R"("avg_non_ignore": {}, "betas": {}, "eps": {}, "groups": {}, "eval": {{"scale_long": {}, )"
        R"("scale_short": {}, "crop": {}, "stride": {}, "patch": {}, "mean": {}, "std": {}}}}})",
        json_list(cfg_.seg.out_indices), head.channels, head.aux_channels, head.num_classes, cfg_.seg.aux_weight,
        cfg_.seg.avg_non_ignore ? "true" : "false", json_list(cfg_.optim.betas), cfg_.optim.eps, json_list(group_json),
        eval_.scale_long, eval_.scale_short, eval_.crop, eval_.stride, eval_.patch, json_list(eval_.mean),
        json_list(eval_.std));
    model_->train();
    head_ = head;
  }

  Sample step() {
    auto t0 = Clock::now();
    const UPerNetOutput out = model_->forward(pixels_);
    const torch::Tensor loss =
        seg_cross_entropy(out.logits, labels_, cfg_.seg.avg_non_ignore) +
        cfg_.seg.aux_weight * seg_cross_entropy(out.aux_logits, labels_, cfg_.seg.avg_non_ignore);
    auto t1 = Clock::now();
    optim_->zero_grad();
    loss.backward();
    auto t2 = Clock::now();
    optim_->step();
    auto t3 = Clock::now();
    const double value = loss.item<double>();
    if (!std::isfinite(value)) throw std::runtime_error(fmt::format("C++ side: non-finite loss {}", value));
    return {1e3 * secs(t0, t3), 1e3 * secs(t0, t1), 1e3 * secs(t1, t2), 1e3 * secs(t2, t3), value};
  }

  // segment_image on the 512x683 image (eval mode); ms, and the class map.
  double infer(torch::Tensor* classes) {
    model_->eval();
    const SegModelFn fn = [this](const torch::Tensor& x) { return model_->forward(x).logits; };
    auto t0 = Clock::now();
    *classes = segment_image(image_mat_, fn, eval_);
    const double ms = 1e3 * secs(t0, Clock::now());
    model_->train();
    return ms;
  }

  // FLOPs of one slide inference: the model on each window (padded to the patch) of the resized image.
  double infer_flops() const {
    const cv::Size size = rescale_size(kImageW, kImageH, eval_.scale_long, eval_.scale_short);
    auto pad = [&](int64_t x) { return (x + eval_.patch - 1) / eval_.patch * eval_.patch; };
    if (eval_.crop <= 0) return forward_flops(cfg_.model, head_, pad(size.height), pad(size.width));
    double total = 0;
    for (const SlideWindow& w : slide_windows(size.height, size.width, eval_.crop, eval_.stride))
      total += forward_flops(cfg_.model, head_, pad(w.y2 - w.y1), pad(w.x2 - w.x1));
    return total;
  }
  double step_flops() const {
    const int64_t s = cfg_.data.image_size;
    return 3 * forward_flops(cfg_.model, head_, s, s) * cfg_.train.micro_batch;
  }

  // One step (or one slide inference) under the Kineto profiler: its ms and the ops' self times.
  std::pair<double, OpTimes> profile(bool inference) {
    namespace prof = torch::autograd::profiler;
    namespace pi = torch::profiler::impl;
    prof::prepareProfiler(pi::ProfilerConfig(pi::ProfilerState::KINETO), {pi::ActivityType::CPU});
    prof::enableProfiler(pi::ProfilerConfig(pi::ProfilerState::KINETO), {pi::ActivityType::CPU});
    torch::Tensor classes;
    const double ms = inference ? infer(&classes) : step().step;
    return {ms, self_times(*prof::disableProfiler())};
  }

 private:
  Config cfg_;
  NepaSegmenter model_;
  UPerNetOptions head_;
  SegEvalOptions eval_;
  std::vector<ParamGroup> groups_;
  std::unique_ptr<AdamW> optim_;
  torch::Tensor pixels_, labels_, image_;
  cv::Mat image_mat_;
};

// `seg_step.py serve`: a command line in ("step", "infer", "profile step|infer"), one JSON line out; `gemm`: one line,
// then EOF. Spawned (not forked by hand) because this process already runs OpenMP threads.
// `seg_step.py serve`: a line "step" in, one JSON line out.
Sample python_step(bench::JsonChild& py) {
  const YAML::Node j = py.call("step");
  return {j["step_ms"].as<double>(), j["forward_ms"].as<double>(), j["backward_ms"].as<double>(),
          j["optim_ms"].as<double>(), j["loss"].as<double>()};
}

// Both sides' profiled step or inference, ops by the larger of their two self times.
void print_profiles(const char* what, double cpp_ms, const OpTimes& cpp, double eager_ms, const OpTimes& eager) {
  double cpp_total = 0, eager_total = 0;
  std::map<std::string, double> larger;
  for (const auto& [k, v] : cpp) cpp_total += v.first, larger[k] = v.first;
  for (const auto& [k, v] : eager) eager_total += v.first, larger[k] = std::max(larger[k], v.first);
  std::vector<std::pair<double, std::string>> order;
  for (const auto& [k, v] : larger) order.emplace_back(-v, k);
  std::sort(order.begin(), order.end());
  fmt::print(
      "  one profiled {}: C++ {:.0f} ms ({:.0f} ms in ops), eager {:.0f} ms ({:.0f} ms in ops)\n"
      "  {:<64} {:>9} {:>6} {:>9} {:>6}\n",
      what, cpp_ms, cpp_total, eager_ms, eager_total, "op (self CPU time)", "C++ ms", "calls", "eager ms", "calls");
  auto cell = [](const OpTimes& t, const std::string& k) {
    auto it = t.find(k);
    return it == t.end() ? fmt::format("{:>9} {:>6}", "-", "-")
                         : fmt::format("{:>9.1f} {:>6}", it->second.first, it->second.second);
  };
  for (size_t i = 0; i < std::min<size_t>(order.size(), 25); ++i)
    fmt::print("  {:<64} {} {}\n", order[i].second.substr(0, 64), cell(cpp, order[i].second),
               cell(eager, order[i].second));
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"UPerNet segmentation step (forward, loss, backward, AdamW) and slide inference: C++ vs PyTorch eager"};
  int threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  int steps = 10, warmup = 3, gemm_reps = 10, infer_reps = 0;
  uint64_t seed = 0;
  std::string only, python = bench::default_python();
  bool no_eager = false, profile = false;
  app.add_option("--threads", threads, "intra-op threads for both sides (default: all cores)")
      ->check(CLI::PositiveNumber);
  app.add_option("--steps", steps, "timed training steps per side; medians are reported")->check(CLI::PositiveNumber);
  app.add_option("--warmup", warmup, "untimed training steps per side first")->check(CLI::NonNegativeNumber);
  app.add_option("--infer-reps", infer_reps, "timed slide inferences per side after one untimed (default: --steps)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--only", only, "run one configuration")->check(CLI::IsMember({"tiny", "vits"}));
  app.add_option("--python", python, "Python with torch + safetensors (default: $NEPA_PYTHON or ~/.cache/nepa/venv)");
  app.add_option("--seed", seed, "seed of the weights and the inputs");
  app.add_option("--gemm-reps", gemm_reps, "repetitions per GEMM shape (best kept)")->check(CLI::PositiveNumber);
  app.add_flag("--no-eager", no_eager, "C++ side only (no Python)");
  app.add_flag("--profile", profile, "after timing, profile one step and one inference per side: ops by self time");
  CLI11_PARSE(app, argc, argv);
  if (infer_reps == 0) infer_reps = steps;

  torch::set_num_threads(threads);
  spdlog::set_level(spdlog::level::warn);  // SegTask's lr table
  const std::string source_dir = NEPA_SOURCE_DIR, script = source_dir + "/bench/seg_step.py";

  const bench::GemmPeak peak_cpp = bench::gemm_peak(kGemmShapes, gemm_reps);
  std::map<std::string, double> peak_py;
  double peak = peak_cpp.best;
  if (!no_eager) {
    bench::JsonChild gemm(
        {python, script, "gemm", "--threads", std::to_string(threads), "--reps", std::to_string(gemm_reps)});
    peak = std::max(peak, gemm.header()["gflops"].as<double>());
    for (const auto& kv : gemm.header()["shapes"]) peak_py[kv.first.as<std::string>()] = kv.second.as<double>();
  }
  fmt::print("threads {} | fp32 GEMM GFLOP/s, best of {} (LibTorch / PyTorch):", threads, gemm_reps);
  for (const auto& [shape, g] : peak_cpp.per_shape)
    fmt::print(" {} {:.1f} / {};", shape, g, no_eager ? "-" : fmt::format("{:.1f}", peak_py[shape]));
  fmt::print(" peak used for MFU {:.1f}\n", peak);

  struct Row {
    std::string label;
    int batch = 0;
    double step_flops = 0, infer_flops = 0, agreement = std::nan("");
    Sample cpp, eager{std::nan(""), std::nan(""), std::nan(""), std::nan(""), std::nan("")};
    double infer_cpp = 0, infer_eager = std::nan("");
    std::string spread[2] = {"-", "-"};  // fastest - slowest timed step, C++ and eager
  };
  std::vector<Row> rows;
  const fs::path dir = fs::temp_directory_path() / fmt::format("nepa_bench_seg_step_{}", ::getpid());
  int rc = 0;
  try {
    for (const std::string key : {"vits", "tiny"}) {
      if (!only.empty() && only != key) continue;
      const Case c = make_case(key, source_dir);
      const fs::path case_dir = dir / key;
      fs::create_directories(case_dir);
      CppStepper cpp(c, seed, case_dir);
      Row r;
      std::tie(r.label, r.batch, r.step_flops, r.infer_flops) =
          std::tuple(c.label, c.config.train.micro_batch, cpp.step_flops(), cpp.infer_flops());
      fmt::print(
          "\n[{}] step {:.1f} GFLOP; slide inference of a {}x{} image {:.1f} GFLOP (crop {}, stride {}, scale "
          "({}, {})); {} warmup + {} timed steps per side\n",
          c.label, r.step_flops / 1e9, kImageH, kImageW, r.infer_flops / 1e9, c.config.seg.eval_crop,
          c.config.seg.eval_stride, c.config.seg.scale_long, c.config.seg.scale_short, warmup, steps);
      std::unique_ptr<bench::JsonChild> py;
      if (!no_eager) {
        py = std::make_unique<bench::JsonChild>(
            std::vector<std::string>{python, script, "serve", case_dir.string(), "--threads", std::to_string(threads)});
        if (py->header()["threads"].as<int>() != threads)
          throw std::runtime_error("the Python side runs on a different number of threads");
      }
      // Inference first, on the initial weights (eval mode changes nothing), so that the class maps are comparable.
      std::vector<double> inf_cpp, inf_py;
      for (int i = 0; i < 1 + infer_reps; ++i) {
        torch::Tensor classes;
        if (const double ms = cpp.infer(&classes); i > 0) inf_cpp.push_back(ms);
        if (!py) continue;
        if (const double ms = py->call("infer")["infer_ms"].as<double>(); i > 0) inf_py.push_back(ms);
        if (i > 0) continue;
        const auto theirs = load_safetensors((case_dir / "eager_map.safetensors").string()).at("classes");
        r.agreement = 100.0 * classes.eq(theirs).to(torch::kFloat64).mean().item<double>();
      }
      r.infer_cpp = median(inf_cpp);
      if (py) r.infer_eager = median(inf_py);

      std::vector<Sample> cpp_samples, py_samples;
      for (int i = 0; i < warmup + steps; ++i) {
        const Sample a = cpp.step();
        if (i >= warmup) cpp_samples.push_back(a);
        if (!py) continue;
        const Sample b = python_step(*py);
        if (i >= warmup) py_samples.push_back(b);
        if (i > 0) continue;
        const double rel = std::abs(a.loss - b.loss) / std::max(std::abs(a.loss), std::abs(b.loss));
        fmt::print("[{}] first step's loss: C++ {:.6f}, eager {:.6f} (relative difference {:.2g}, tolerance {})\n",
                   c.label, a.loss, b.loss, rel, kLossTolerance);
        if (!(rel <= kLossTolerance))
          throw std::runtime_error("the first losses differ by more than the tolerance: not the same model");
      }
      r.cpp = medians(cpp_samples);
      if (py) r.eager = medians(py_samples);
      for (const auto* v : {&cpp_samples, &py_samples}) {
        if (v->empty()) continue;
        const auto [lo, hi] =
            std::minmax_element(v->begin(), v->end(), [](auto& a, auto& b) { return a.step < b.step; });
        r.spread[v == &py_samples] = fmt::format("{:.0f}-{:.0f}", lo->step, hi->step);
      }
      fmt::print(
          "[{}] step ms C++ {:.0f}, eager {:.0f}; last loss C++ {:.4f}, eager {:.4f}; slide inference ms C++ "
          "{:.0f}, eager {:.0f}; class maps agree on {:.3f} % of pixels\n",
          c.label, r.cpp.step, r.eager.step, r.cpp.loss, r.eager.loss, r.infer_cpp, r.infer_eager, r.agreement);
      for (const bool inference : {false, true}) {
        if (!profile) break;
        const auto [cpp_ms, cpp_ops] = cpp.profile(inference);
        OpTimes eager_ops;
        double eager_ms = std::nan("");
        if (py) {
          const YAML::Node j = py->call(inference ? "profile infer" : "profile step");
          eager_ms = j["ms"].as<double>();
          for (const auto& kv : j["ops"])
            eager_ops[kv.first.as<std::string>()] = {kv.second[0].as<double>(), kv.second[1].as<int>()};
        }
        print_profiles(inference ? "slide inference" : "training step", cpp_ms, cpp_ops, eager_ms, eager_ops);
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

  auto mfu = [&](double flops, double ms) { return 100.0 * flops / (ms / 1e3) / (peak * 1e9); };
  const std::string head = "{:<20} {:>10} {:>10} {:>7} {:>8} {:>8}\n",
                    line = "{:<20} {:>10.3f} {:>10.3f} {:>6.2f}x {:>7.1f}% {:>7.1f}%";
  fmt::print(fmt::runtime("\ntraining step\n" + head), "config", "C++ img/s", "eager", "ratio", "C++ MFU", "eager");
  for (const auto& r : rows)
    fmt::print(fmt::runtime(line + "\n"), r.label, r.batch * 1e3 / r.cpp.step, r.batch * 1e3 / r.eager.step,
               r.eager.step / r.cpp.step, mfu(r.step_flops, r.cpp.step), mfu(r.step_flops, r.eager.step));
  fmt::print(fmt::runtime("slide inference, one {}x{} image\n" + head), kImageH, kImageW, "config", "C++ img/s",
             "eager", "ratio", "C++ MFU", "eager");
  for (const auto& r : rows)
    fmt::print(fmt::runtime(line + "  (maps agree: {:.3f} %)\n"), r.label, 1e3 / r.infer_cpp, 1e3 / r.infer_eager,
               r.infer_eager / r.infer_cpp, mfu(r.infer_flops, r.infer_cpp), mfu(r.infer_flops, r.infer_eager),
               r.agreement);
  fmt::print("GEMM peak {:.1f} GFLOP/s\n\nper step (medians, ms)     {:>8} {:>8} {:>8} {:>7} {:>13}\n", peak, "step",
             "forward", "backward", "AdamW", "step min-max");
  for (const auto& r : rows)
    for (int e = 0; e < 2; ++e) {
      const Sample& s = e ? r.eager : r.cpp;
      fmt::print("{:<20} {:<5} {:>8.1f} {:>8.1f} {:>8.1f} {:>7.1f} {:>13}\n", e ? "" : r.label, e ? "eager" : "C++",
                 s.step, s.forward, s.backward, s.optim, r.spread[e]);
    }
  fmt::print("forward includes the loss, backward includes zero_grad; slide inference: segment_image, median of {}.\n",
             infer_reps);
  return rc;
}
