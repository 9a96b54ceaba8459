#include "nepa/train/trainer.h"

#include <ATen/Parallel.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <sched.h>
#include <sys/resource.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <chrono>
#include <cmath>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>

#include "nepa/dist/grad_sync.h"
#include "nepa/io/atomic_file.h"
#include "nepa/train/autocast.h"
#include "nepa/train/checkpoint.h"
#include "nepa/train/readback.h"
#include "nepa/train/signals.h"

namespace nepa {
namespace fs = std::filesystem;

namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); }

// This process's peak resident memory so far (Linux reports ru_maxrss in KiB), for the metrics: what a run costs
// in host memory, next to its img/s.
double peak_rss_mb() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  return static_cast<double>(usage.ru_maxrss) / 1024.0;
}

std::string format_duration(double seconds) {
  auto s = static_cast<int64_t>(std::max(0.0, seconds));
  if (s >= 3600) return fmt::format("{}h{:02d}m", s / 3600, (s % 3600) / 60);
  return fmt::format("{}m{:02d}s", s / 60, s % 60);
}

// metrics.jsonl: one JSON object per line. On resume, lines past the checkpoint's step (written by the run that
// was interrupted after it) are dropped so the file describes one consistent run. A file that cannot be opened
// stops the run at start, a write that fails (a full disk) stops it there, naming the path and the system's
// reason: a run whose metrics silently stopped would look fine for days.
class MetricsLog {
 public:
  MetricsLog(const fs::path& path, bool enabled, int64_t resume_step) : path_(path.string()) {
    if (!enabled) return;
    if (resume_step >= 0 && fs::exists(path)) {
      std::ifstream in(path);
      if (!in) fail("cannot open");
      std::string line, kept;
      while (std::getline(in, line)) {
        // A line cut short by a kill is not JSON: dropped with the lines past the checkpoint.
        const auto row = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
        if (!row.is_object() || !row.contains("step") || !row["step"].is_number_integer() ||
            row["step"].get<int64_t>() > resume_step)
          continue;
        kept += line + "\n";
      }
      write_text_atomic(path_, kept);
    }
    errno = 0;
    file_ = std::fopen(path_.c_str(), resume_step < 0 ? "w" : "a");
    if (!file_) fail("cannot open for writing");
  }
  ~MetricsLog() {
    if (file_) std::fclose(file_);
  }
  MetricsLog(const MetricsLog&) = delete;
  MetricsLog& operator=(const MetricsLog&) = delete;

  void write(const std::string& kind, int64_t step, const std::vector<std::pair<std::string, double>>& values) {
    if (!file_) return;
    std::string line = fmt::format("{{\"kind\":\"{}\",\"step\":{}", kind, step);
    for (const auto& [k, v] : values)
      line += std::isfinite(v) ? fmt::format(",\"{}\":{:.8g}", k, v) : fmt::format(",\"{}\":null", k);
    line += "}\n";
    errno = 0;
    if (std::fwrite(line.data(), 1, line.size(), file_) != line.size() || std::fflush(file_) != 0) fail("write failed");
  }

 private:
  [[noreturn]] void fail(const char* what) const {
    throw std::runtime_error(fmt::format("{}: {}: {}", path_, what, errno ? std::strerror(errno) : "unknown error"));
  }
  std::string path_;
  std::FILE* file_ = nullptr;
};

// What may change between a run and its resumption: the length (schedule), logging, checkpoint cadence, data
// paths and workers. What may not: the model, the batch (it defines the data position) and the seed.
void check_resumable(const CheckpointContent& info, const Config& cfg, const std::string& path) {
  if (info.config_yaml.empty()) return;
  Config saved;
  try {
    saved = load_config_from_string(info.config_yaml, path).config;
  } catch (const ConfigError&) {
    return;  // written by a version with other keys: the tensor checks still apply
  }
  auto differs = [&](bool changed, const std::string& key, const std::string& was, const std::string& now) {
    if (changed)
      throw CheckpointError(path + ": cannot resume with " + key + " = " + now + " (the run used " + was + ")");
  };
  differs(!(saved.model == cfg.model), "a different model section", "another", "this one");
  differs(saved.train.total_batch != cfg.train.total_batch, "train.total_batch",
          std::to_string(saved.train.total_batch), std::to_string(cfg.train.total_batch));
  differs(saved.train.micro_batch != cfg.train.micro_batch, "train.micro_batch",
          std::to_string(saved.train.micro_batch), std::to_string(cfg.train.micro_batch));
  differs(saved.train.seed != cfg.train.seed, "train.seed", std::to_string(saved.train.seed),
          std::to_string(cfg.train.seed));
  differs(saved.train.ema != cfg.train.ema, "train.ema", saved.train.ema ? "true" : "false",
          cfg.train.ema ? "true" : "false");
}

bool has_prefix(const std::map<std::string, torch::Tensor>& tensors, const std::string& prefix) {
  auto it = tensors.lower_bound(prefix);
  return it != tensors.end() && it->first.rfind(prefix, 0) == 0;
}

}  // namespace

std::unique_ptr<LrSchedule> TrainTask::make_schedule(const Config& config, int64_t total_steps) {
  return nepa::make_schedule(config, total_steps);
}

int64_t TrainTask::eval_every(const Config& config, int64_t /*steps_per_epoch*/) { return config.eval.knn_every; }

int configure_threads(int requested, int processes_per_node) {
  int n = requested;
  if (n <= 0) {
    // The cores this process may run on (cgroup/taskset aware), not the machine's.
    cpu_set_t set;
    const int online = std::max(static_cast<int>(std::thread::hardware_concurrency()), 1);
    n = sched_getaffinity(0, sizeof(set), &set) == 0 ? CPU_COUNT(&set) : online;
    // torchrun starts a node's processes with the whole machine each: split it, or they fight. A launcher that
    // already bound this process to its share (srun --cpus-per-task) left a smaller mask: keep it whole.
    if (n >= online) n /= std::max(processes_per_node, 1);
    n = std::max(n, 1);
  }
  torch::set_num_threads(n);
  return n;
}

torch::Device parse_device(const std::string& device) {
  torch::Device d(device);
  if (d.is_cuda() && !torch::cuda::is_available())
    throw std::runtime_error("train.device is " + device + " but no CUDA device is available");
  return d;
}

namespace {

// Every rank's generator_states, on every rank. They are the same size on every rank (one device type), so they
// travel as one row of bytes per rank.
std::map<std::string, torch::Tensor> gather_generator_states(dist::Comm& comm, const torch::Device& device) {
  auto local = generator_states(comm.rank(), device);
  if (comm.world_size() == 1) return local;
  std::vector<torch::Tensor> parts;
  for (const auto& [name, t] : local) parts.push_back(t.reshape(-1));
  const torch::Tensor rows = comm.all_gather_rows(torch::cat(parts).unsqueeze(0));
  const std::string own = fmt::format("rng.{}.", comm.rank());
  std::map<std::string, torch::Tensor> all;
  for (int r = 0; r < comm.world_size(); ++r) {
    int64_t at = 0;
    for (const auto& [name, t] : local) {
      all[fmt::format("rng.{}.{}", r, name.substr(own.size()))] = rows[r].narrow(0, at, t.numel()).clone();
      at += t.numel();
    }
  }
  return all;
}

}  // namespace

TrainResult train(const Config& cfg, TrainTask& task, DataLoader& loader, const TrainOptions& options) {
  // Before any long work (resume, the k-NN at init): a signal from here on stops the run cleanly.
  install_stop_handlers();
  dist::Comm single;
  dist::Comm& comm = options.comm ? *options.comm : single;
  const bool main_rank = comm.is_main();
  const fs::path run_dir = cfg.train.output_dir;
  fs::create_directories(run_dir);
  const int world_size = comm.world_size();
  if (cfg.train.total_batch % (cfg.train.micro_batch * world_size) != 0)
    throw std::runtime_error(fmt::format("train.total_batch {} is not a multiple of train.micro_batch {} x {} processes",
                                         cfg.train.total_batch, cfg.train.micro_batch, world_size));
  const int64_t accum = cfg.train.total_batch / (cfg.train.micro_batch * world_size);
  const int64_t micro_per_epoch = loader.batches_per_epoch() / accum * accum;
  const int64_t steps_per_epoch = micro_per_epoch / accum;
  if (steps_per_epoch == 0)
    throw std::runtime_error(fmt::format("data: {} training images are fewer than one batch of train.total_batch = {}",
                                         loader.dataset().size(), cfg.train.total_batch));
  const int64_t steps = total_steps(cfg.schedule, steps_per_epoch);
  const int64_t eval_every = task.eval_every(cfg, steps_per_epoch);

  // ---- model, optimizer, resume -----------------------------------------------------------------------------
  std::vector<ParamGroup> groups = task.param_groups();
  auto schedule = task.make_schedule(cfg, steps);
  task.begin(steps);
  auto optimizer = make_adamw(groups, cfg.optim);
  std::vector<torch::Tensor> all_params;
  for (const auto& g : groups) all_params.insert(all_params.end(), g.params.begin(), g.params.end());
  spdlog::info("parameter groups:\n{}", describe_groups(groups));

  // The EMA covers everything the task carries (module()), trained or not, as the release averages its whole
  // state_dict; it is saved in checkpoints as extra "ema.*".
  std::shared_ptr<Ema> ema;
  if (cfg.train.ema) {
    ema = std::make_shared<Ema>(task.module(), cfg.train.ema_decay);
    task.attach_ema(ema);
  }
  auto extra_state = [&]() {
    auto extra = task.extra_state();
    if (ema) extra.merge(ema->state("ema."));
    return extra;
  };

  // The device whose generator this process draws from (the group's GPU in a data-parallel run).
  const torch::Device device = world_size > 1 ? comm.device() : parse_device(cfg.train.device);
  CheckpointDir checkpoints((run_dir / "checkpoints").string(), cfg.train.keep_last);
  TrainState state;
  TrainResult result;
  result.total_steps = steps;
  if (main_rank)
    if (const int n = checkpoints.remove_stale_temp_files())
      spdlog::info("removed {} temp file(s) left by killed checkpoint writers", n);
  std::vector<std::string> resume_warnings;
  const auto resume_path = resolve_resume(options.resume, run_dir.string(), &resume_warnings);
  for (const auto& w : resume_warnings) spdlog::warn("{}", w);
  if (const auto& path = resume_path) {
    check_resumable(read_checkpoint_info(*path), cfg, *path);
    CheckpointContent content = load_checkpoint(*path, task.module(), *optimizer, groups, comm.rank(), device);
    if (ema) {
      if (!has_prefix(content.extra, "ema."))
        throw CheckpointError(*path + ": the run kept no EMA of its weights (train.ema was off): resume with "
                              "--set train.ema=false");
      ema->load_state(content.extra, "ema.");
    }
    task.load_extra_state(content.extra);
    state = content.state;
    if (world_size > 1 && content.generators == GeneratorRestore::kShared)
      spdlog::warn("{} predates per-rank generator states: this rank continues from rank 0's", *path);
    else if (content.generators == GeneratorRestore::kNone)
      spdlog::warn("{} holds no generator state for rank {} (written by {} processes): its random draws start from "
                   "train.seed + {}", *path, comm.rank(), content.state.world_size, comm.rank());
    result.checkpoint = *path;
    spdlog::info("resumed from {}: step {}, epoch {}, batch {}", *path, state.step, state.epoch, state.batch);
    if (state.world_size == 0) {
      spdlog::warn("{} does not record its process count; assuming it was {}, as now", *path, world_size);
    } else if (state.world_size != world_size) {
      // Every step reads the same total_batch samples of the epoch's order whatever the process count (the
      // processes split them), so the position converts exactly through the samples already read.
      const int64_t samples = state.batch * cfg.train.micro_batch * state.world_size;
      const int64_t per_batch = int64_t{cfg.train.micro_batch} * world_size;
      if (samples % per_batch != 0)
        throw CheckpointError(fmt::format("{}: written by {} processes at epoch position {} samples, which {} "
                                          "processes x train.micro_batch {} cannot continue from", *path,
                                          state.world_size, samples, world_size, cfg.train.micro_batch));
      spdlog::info("the checkpoint was written by {} processes, this run has {}: epoch position {} samples = "
                   "micro-batch {} of each process", state.world_size, world_size, samples, samples / per_batch);
      state.batch = samples / per_batch;
    }
  } else if (options.resume.empty() && checkpoints.latest()) {
    // A fresh run here would interleave its checkpoints with the old run's and prune the wrong ones.
    throw CheckpointError("run directory " + run_dir.string() + " already holds checkpoints (latest " +
                          *checkpoints.latest() + "): pass --resume auto to continue that run, or choose another "
                          "--output-dir");
  }
  state.world_size = world_size;
  const bool resumed = state.step > 0 || !result.checkpoint.empty();
  MetricsLog metrics(run_dir / "metrics.jsonl", cfg.log.jsonl && main_rank, resumed ? state.step : -1);

  // Every replica starts from rank 0's weights (a fresh init may differ per rank; a resumed one may not, but
  // one broadcast is cheaper than trusting a shared filesystem).
  std::vector<torch::Tensor> replicated = task.module().parameters();
  for (const auto& b : task.module().buffers()) replicated.push_back(b);
  dist::broadcast_module_state(comm, replicated);
  std::vector<torch::Tensor> trained;
  std::vector<std::string> trained_names;
  for (const auto& g : groups)
    for (size_t i = 0; i < g.params.size(); ++i)
      if (g.params[i].requires_grad()) {
        trained.push_back(g.params[i]);
        trained_names.push_back(i < g.param_names.size() ? g.param_names[i] : g.name + "[" + std::to_string(i) + "]");
      }
  dist::GradSync grad_sync(comm, trained, cfg.dist.bucket_mb);

  const bool autocast = cfg.train.precision == "bf16";
  const c10::DeviceType device_type = torch::Device(cfg.train.device).type();
  std::string lr_summary = schedule->summary();
  if (lr_summary.empty())
    lr_summary = fmt::format("{} warmup", static_cast<int64_t>(std::ceil(cfg.schedule.warmup_fraction * steps)));
  spdlog::info("training: {} steps ({} per epoch, {} micro-batches of {} x accumulation {} x {} processes), lr {:.3g} "
               "peak, {}",
               steps, steps_per_epoch, micro_per_epoch, cfg.train.micro_batch, accum, world_size,
               scaled_lr(cfg.optim, cfg.train.total_batch), lr_summary);
  spdlog::info("{}; {}", describe_clipping(cfg.optim), describe_ema(cfg.train));
  if (cfg.optim.final_weight_decay)
    spdlog::info("weight decay {:.4g} -> {:.4g} along a half cosine over the run (I-JEPA's CosineWDSchedule)",
                 cfg.optim.weight_decay, *cfg.optim.final_weight_decay);
  if (world_size > 1)
    spdlog::info("data parallel: {} processes ({}), {} gradient buckets of <= {} MB{}", world_size, comm.backend(),
                 grad_sync.num_buckets(), cfg.dist.bucket_mb,
                 device_type == c10::DeviceType::CUDA ? " (no comm share in the progress lines: NCCL's waits are "
                                                        "asynchronous on the GPU)"
                                                      : "");

  // Only rank 0 writes; the others know the file by name (all ranks hold the same state but their own
  // generators, which are gathered: a collective, so every rank calls save() at the same points).
  auto save = [&]() {
    auto generators = gather_generator_states(comm, device);
    if (main_rank) {
      result.checkpoint = checkpoints.save(task.module(), *optimizer, groups, state, options.config_yaml,
                                           extra_state(), generators);
      spdlog::info("checkpoint: {}", result.checkpoint);
    } else {
      result.checkpoint = checkpoints.path_for_step(state.step);
    }
  };
  // Evaluations (k-NN, validation, segmentation) run under the training's precision, as the release's Trainer
  // evaluates under its autocast.
  auto evaluate = [&]() {
    std::vector<std::pair<std::string, double>> figures;
    {
      AutocastScope scope(autocast, device_type);
      figures = task.evaluate(state.step);
    }
    if (figures.empty()) return;
    std::string line;
    for (const auto& [k, v] : figures) line += fmt::format(" {} {:.4f}", k, v);
    spdlog::info("eval step {}:{}", state.step, line);
    metrics.write("eval", state.step, figures);
    result.last_eval = figures;
  };

  // A stop every rank has agreed on (a signal reaches the ranks at different moments): one small all-reduce.
  // Asked before the first step and between the micro-batches of an accumulated step (not in a GPU group); at
  // step ends the stop flag travels with the step's figures.
  auto agreed_stop = [&]() {
    if (world_size == 1) return stop_requested() != 0;
    return comm.all_reduce(std::vector<double>{stop_requested() ? 1.0 : 0.0})[0] > 0;
  };

  // ---- a step's figures, read one step late ------------------------------------------------------------------
  // Each step leaves its figures on the device: loss, metrics, the gradient norm, whether its update was skipped
  // and (in a group) whether any rank was asked to stop, reduced over the ranks there. The host reads them one
  // step later, once the next step's forward and backward are queued, or at once where it must act on them
  // (before a checkpoint, an evaluation, a stop, the end): so the device never waits for the host, and the one
  // host read per step is of work already done. A non-finite loss or gradient norm skips the update on the device
  // (the fused AdamW's found_inf); the EMA takes a step only once it is known to be good. A bad step is thus found
  // with the parameters, moments and EMA of the step before it, which is what is saved.
  struct Interval {  // the progress line's rates, measured when the step was queued
    double img_s = 0, data_share = 0, comm_share = -1, eta_s = 0, peak_rss_mb = 0;
  };
  struct Unsettled {
    TrainState before, after;
    std::map<std::string, torch::Tensor> generators_before;
    std::unique_ptr<Readback> figures;  // [loss, metrics..., grad norm, skipped, stop, (group) per-parameter ranks]
    double lr = 0, wd = 0;
    bool log = false;
    Interval interval;
  };
  std::optional<Unsettled> unsettled;
  std::vector<std::string> metric_names;  // the task's metrics, in figure order
  // Acts on the figures of the unsettled step: logs them, takes the EMA step, and when they are not finite
  // rewinds to the state before that step, saves it and throws TrainingDiverged. Returns whether the ranks agreed
  // to stop after it (always false for one process, which stops on its own signal).
  auto settle = [&]() -> bool {
    if (!unsettled) return false;
    Unsettled u = std::move(*unsettled);
    unsettled.reset();
    const std::vector<double> v =
        world_size > 1 ? u.figures->get([&](const std::function<bool()>& done) { comm.poll_until(done, "step figures"); })
                       : u.figures->get();
    const size_t k = metric_names.size();
    const double loss = v[0], gnorm = v[k + 1];
    if (v[k + 2] > 0) {
      // The update was skipped on the device; no optimizer step has run since (settle() always comes first).
      optimizer->undo_skipped_step();
      optimizer->zero_grad();
      state = u.before;
      set_generator_states(u.generators_before, comm.rank(), device);
      // Every rank waits for rank 0's checkpoint, as on a signal: a rank that exited at once would have the
      // launcher kill rank 0 in the middle of writing it.
      save();
      comm.barrier();
      throw TrainingDiverged(fmt::format("{} is {} at step {} (epoch {}); the last good state (step {}) is saved in {}",
                                         std::isfinite(loss) ? "the gradient norm" : "loss",
                                         std::isfinite(loss) ? gnorm : loss, u.after.step, u.after.epoch,
                                         u.before.step, result.checkpoint));
    }
    if (world_size > 1)
      if (const auto i = grad_sync.first_untrained(std::vector<double>(v.begin() + static_cast<int64_t>(k) + 4, v.end())))
        throw dist::DistError(fmt::format("data parallel: no rank produced a gradient for {} at step {}, though one did "
                                          "at the run's first step: the set of trained parameters may not change "
                                          "during a run (freeze a parameter with requires_grad false)",
                                          trained_names.at(*i), u.after.step));
    if (ema) ema->update_parameters(u.after.step);
    if (u.log) {
      std::vector<std::pair<std::string, double>> values = {{"epoch", static_cast<double>(u.after.epoch)},
                                                             {"loss", loss}};
      std::string extras;
      for (size_t i = 0; i < k; ++i) {
        values.emplace_back(metric_names[i], v[1 + i]);
        extras += fmt::format(" {} {:.4f}", metric_names[i], v[1 + i]);
      }
      values.insert(values.end(), {{"lr", u.lr}, {"wd", u.wd}, {"grad_norm", gnorm}, {"img_per_s", u.interval.img_s},
                                   {"data_wait", u.interval.data_share}, {"peak_rss_mb", u.interval.peak_rss_mb}});
      std::string comm_share;
      if (u.interval.comm_share >= 0) {
        values.emplace_back("comm_wait", u.interval.comm_share);
        comm_share = fmt::format(" comm {:.0f}%", 100.0 * u.interval.comm_share);
      }
      // The weight decay only when it moves: otherwise it is the config's value, printed at the start.
      const std::string wd_text = cfg.optim.final_weight_decay ? fmt::format(" wd {:.4g}", u.wd) : "";
      spdlog::info("step {}/{} ep {} loss {:.4f}{} lr {:.3e}{} gnorm {:.3f} {:.0f} img/s data {:.0f}%{} ETA {}",
                   u.after.step, steps, u.after.epoch, loss, extras, u.lr, wd_text, gnorm, u.interval.img_s,
                   100.0 * u.interval.data_share, comm_share, format_duration(u.interval.eta_s));
      metrics.write("train", u.after.step, values);
      result.last_metrics.clear();
      for (const auto& val : values) result.last_metrics[val.first] = val.second;
    }
    return world_size > 1 && v[k + 3] > 0;
  };

  // Settles the last step, saves `state` (unless nothing was trained: there is nothing to resume then) and ends
  // the run as interrupted; rank 0's checkpoint is on disk before any rank reports success.
  auto stop_run = [&](const std::string& where) {
    const int sig = stop_requested();
    spdlog::warn("{} received: {}", sig ? signal_name(sig) : "stop (from another rank)", where);
    settle();
    if (state.step > 0 && result.checkpoint != checkpoints.path_for_step(state.step)) save();
    clear_stop_request();
    comm.barrier();
    result.status = TrainResult::Status::kInterrupted;
    result.stop_signal = sig;
    result.step = state.step;
    return result;
  };

  if (!resumed && cfg.eval.knn_at_init) {
    evaluate();
    result.first_eval = result.last_eval;
  }
  if (agreed_stop()) return stop_run(fmt::format("stopping before step {}", state.step + 1));
  task.module().train();
  loader.start(state.epoch, state.batch);

  // ---- the loop -----------------------------------------------------------------------------------------------
  auto interval_start = Clock::now();
  double interval_data_wait = 0.0, interval_comm_wait = 0.0;
  int64_t interval_images = 0, interval_steps = 0;
  while (state.step < steps) {
    const TrainState before = state;
    // A step that does not complete (a stop between micro-batches or after the step before) is saved as it stood
    // before it, generators included, so that the resumed run redoes it exactly.
    const auto generators_before = generator_states(comm.rank(), device);
    auto rewind = [&]() {
      optimizer->zero_grad();
      state = before;
      set_generator_states(generators_before, comm.rank(), device);
    };
    std::vector<std::pair<std::string, torch::Tensor>> sums;  // summed on the device
    torch::Tensor loss_sum;
    for (int64_t micro = 0; micro < accum; ++micro) {
      auto wait_start = Clock::now();
      if (state.batch >= micro_per_epoch) {
        ++state.epoch;
        state.batch = 0;
        loader.start(state.epoch, 0);
      }
      std::optional<Batch> batch = loader.next();
      if (!batch) throw std::logic_error("data loader ended its epoch early");
      interval_data_wait += seconds_since(wait_start);
      ++state.batch;

      StepOutput out;
      {
        AutocastScope scope(autocast, device_type);
        out = task.forward(*batch);
      }
      grad_sync.begin(/*sync=*/micro == accum - 1);
      (out.loss / static_cast<double>(accum)).backward();
      torch::Tensor l = out.loss.detach();
      loss_sum = loss_sum.defined() ? loss_sum + l : l;
      if (sums.empty())
        for (const auto& m : out.metrics) sums.emplace_back(m.first, m.second.detach().to(torch::kFloat64));
      else
        for (size_t i = 0; i < out.metrics.size() && i < sums.size(); ++i) sums[i].second += out.metrics[i].second;
      interval_images += batch->images.size(0) * world_size;
      // With accumulation a step can take minutes: a stop does not wait for it, the partial step is dropped. Not
      // in a GPU group, where agreeing would make the host wait for the device every micro-batch: there the stop
      // flag travels with the step's figures (read one step later).
      if (micro + 1 < accum && !(world_size > 1 && device_type == c10::DeviceType::CUDA) && agreed_stop()) {
        rewind();
        return stop_run(fmt::format("stopping within step {} (after micro-batch {} of {}; the step is dropped and "
                                    "redone on resume)", before.step + 1, micro + 1, accum));
      }
    }
    grad_sync.finish();
    interval_comm_wait += grad_sync.last_wait_seconds();
    if (metric_names.empty())
      for (const auto& [name, sum] : sums) metric_names.push_back(name);
    // The step before, now that this one's backward is queued behind it.
    if (settle()) {
      rewind();
      return stop_run(fmt::format("stopping after step {} (step {} is dropped and redone on resume)", state.step,
                                  state.step + 1));
    }

    // On the averaged gradient, once per optimizer step, as the HF Trainer clips (max_grad_norm). The norm is
    // measured even without clipping: it is logged, and a non-finite one skips the step like a non-finite loss.
    torch::Tensor gnorm_t = clip_grad_norm(all_params, cfg.optim.grad_clip);
    const auto f64 = torch::TensorOptions().dtype(torch::kFloat64).device(loss_sum.device());
    std::vector<torch::Tensor> parts = {loss_sum.to(torch::kFloat64) / static_cast<double>(accum)};
    for (const auto& [name, sum] : sums) parts.push_back(sum / static_cast<double>(accum));
    parts.push_back(gnorm_t.to(f64));  // the pre-clip norm, as HF logs it; equal on every rank
    parts.push_back(torch::zeros({}, f64));
    parts.push_back(torch::full({}, stop_requested() ? 1.0 : 0.0, f64));
    torch::Tensor figures = torch::stack(parts);
    const int64_t k = static_cast<int64_t>(sums.size());
    if (world_size > 1) {
      // One small all-reduce per step makes the loss, the metrics and the decisions global: every rank skips
      // the same updates and takes the same branches, so none is left waiting in a collective the others skipped.
      // Each parameter's count of ranks that trained it rides along (GradSync::first_untrained).
      figures = torch::cat({figures, grad_sync.step_usage()});
      comm.all_reduce_async(figures).order();
      figures.narrow(0, 0, k + 2).div_(world_size);
    }
    const torch::Tensor skipped = torch::logical_or(torch::isfinite(figures[0]).logical_not(),
                                                    torch::isfinite(figures[k + 1]).logical_not());
    figures[k + 2].copy_(skipped);
    const torch::Tensor found_inf = skipped.to(torch::kFloat32);

    const bool log_now = (state.step + 1) % cfg.log.log_every == 0 || state.step + 1 == steps;
    double lr = 0.0;  // logged: the largest group lr (all equal in pretraining)
    // optim.final_weight_decay scales every decaying group's configured value alike (a function of the step:
    // nothing to checkpoint).
    const double wd = weight_decay_at(cfg.optim, state.step, steps);
    const double wd_scale = cfg.optim.weight_decay > 0 ? wd / cfg.optim.weight_decay : 1.0;
    for (size_t g = 0; g < optimizer->num_groups(); ++g) {
      const double group_lr = schedule->lr(static_cast<int>(g), state.step) * groups[g].lr_scale;
      optimizer->set_lr(g, group_lr);
      optimizer->set_weight_decay(g, groups[g].weight_decay * wd_scale);
      lr = std::max(lr, group_lr);
    }
    optimizer->step(found_inf);
    optimizer->zero_grad();
    ++state.step;
    state.samples_seen += cfg.train.total_batch;
    ++interval_steps;
    // The buffers' average now: the next forward changes them (BatchNorm statistics); the parameters' once the
    // step is read good (settle), before the next optimizer step changes them.
    if (ema) ema->update_buffers(state.step);
    task.after_step(state.step, found_inf);

    Unsettled u{before, state, generators_before, std::make_unique<Readback>(figures), lr, wd, log_now, {}};
    if (log_now) {
      const double secs = seconds_since(interval_start);
      u.interval.img_s = interval_images / secs;
      u.interval.data_share = interval_data_wait / secs;
      // On CUDA the wait only orders NCCL's stream before the optimizer's (the host does not block), so the time
      // measured there is not communication time: no comm share on GPUs rather than a false ~0 %.
      if (world_size > 1 && device_type != c10::DeviceType::CUDA) u.interval.comm_share = interval_comm_wait / secs;
      u.interval.eta_s = (steps - state.step) * secs / static_cast<double>(interval_steps);
      u.interval.peak_rss_mb = peak_rss_mb();
      interval_start = Clock::now();
      interval_data_wait = interval_comm_wait = 0.0;
      interval_images = interval_steps = 0;
    }
    unsettled = std::move(u);

    // A single process stops after the step in which the signal came; a group after the step in which some rank
    // had seen it, once its figures are read (above, one step later).
    if (world_size == 1 && stop_requested() != 0) return stop_run(fmt::format("stopping after step {}", state.step));
    const bool eval_now = eval_every > 0 && state.step % eval_every == 0 && state.step < steps;
    const bool save_now = state.step % cfg.train.checkpoint_every == 0 && state.step < steps;
    if ((eval_now || save_now) && settle()) return stop_run(fmt::format("stopping after step {}", state.step));
    if (eval_now) evaluate();
    if (save_now) save();
  }

  // ---- the end ------------------------------------------------------------------------------------------------
  settle();
  if (result.checkpoint != checkpoints.path_for_step(state.step)) save();
  evaluate();
  result.export_dir = (run_dir / "final").string();
  if (main_rank) {
    task.export_final(result.export_dir);
    spdlog::info("exported {}", result.export_dir);
  }
  comm.barrier();
  result.step = state.step;
  return result;
}

}  // namespace nepa
