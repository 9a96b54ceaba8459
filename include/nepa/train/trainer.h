// The one training loop. Pretraining, fine-tuning and segmentation differ only in their TrainTask (model,
// parameter groups, forward + loss, extras such as an EMA, evaluation, export); the loop owns everything a
// serious run needs: accumulation, schedule, gradient clipping, the EMA of the weights, autocast, progress lines and
// metrics.jsonl, atomic checkpoints with exact resume, stop signals, and divergence handling.
//
// The host never waits for the device inside a step: a step's figures (loss, metrics, gradient norm, flags) are
// read one step late (Readback), a non-finite step is skipped on the device by the optimizer's found_inf and the
// run then stops with the state from before it, and data-parallel collectives are ordered on the device's streams.
#pragma once

#include <torch/nn/module.h>

#include <cstdint>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

#include "nepa/config/config.h"
#include "nepa/data/loader.h"
#include "nepa/dist/comm.h"
#include "nepa/train/ema.h"
#include "nepa/train/optim.h"
#include "nepa/train/schedule.h"

namespace nepa {

// What one micro-batch produced: the loss to backpropagate and detached scalar metrics to average and log.
struct StepOutput {
  torch::Tensor loss;
  std::vector<std::pair<std::string, torch::Tensor>> metrics;
};

class TrainTask {
 public:
  virtual ~TrainTask() = default;
  // Everything that is trained or carried (saved in checkpoints as "model.*").
  virtual torch::nn::Module& module() = 0;
  virtual std::vector<ParamGroup> param_groups() = 0;
  // Forward + loss on one micro-batch, in training mode.
  virtual StepOutput forward(const Batch& batch) = 0;
  // Right after every optimizer step is queued, before its figures are read (train() reads them one step late).
  // `skipped` is a scalar on the device, non-zero when the step's loss or gradient norm was not finite and its
  // update was skipped; the run then stops with the state from before that step, so whatever after_step updates
  // must stay unchanged under `skipped` (on the device: reading it here would make the host wait every step).
  virtual void after_step(int64_t /*step*/, const torch::Tensor& /*skipped*/) {}
  // Extra tensors saved with checkpoints and handed back on resume.
  virtual std::map<std::string, torch::Tensor> extra_state() { return {}; }
  virtual void load_extra_state(const std::map<std::string, torch::Tensor>& /*extra*/) {}
  // Evaluation; returned figures are logged and written to metrics.jsonl. Must leave the module in train mode.
  virtual std::vector<std::pair<std::string, double>> evaluate(int64_t /*step*/) { return {}; }
  // Writes the deliverable (e.g. an HF-layout model folder) into `dir`.
  virtual void export_final(const std::string& dir) = 0;
  // The lr of each of param_groups() per step (multiplied by the group's lr_scale). Default: the config's
  // warmup + cosine, the same for every group.
  virtual std::unique_ptr<LrSchedule> make_schedule(const Config& config, int64_t total_steps);
  // Once before the first step of this process (fresh or resumed), with the run's total optimizer steps.
  virtual void begin(int64_t /*total_steps*/) {}
  // Optimizer steps between evaluations during training (0 = only at the end). Default: eval.knn_every.
  virtual int64_t eval_every(const Config& config, int64_t steps_per_epoch);

  // The loop's EMA of module() when train.ema is on (null otherwise), attached before the first evaluate() and
  // kept until the task is destroyed, so that evaluation and export can use it.
  void attach_ema(std::shared_ptr<const Ema> ema) { ema_ = std::move(ema); }
  const Ema* ema() const { return ema_.get(); }

 private:
  std::shared_ptr<const Ema> ema_;
};

// A non-finite loss or gradient norm. The message names the step and the checkpoint holding the last good state.
class TrainingDiverged : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct TrainOptions {
  std::string resume;       // "", "auto", or a checkpoint file / run directory (see resolve_resume)
  std::string config_yaml;  // effective config, stored in checkpoints
  // The data-parallel group (null = a single process). Every rank runs train() with its shard of the data
  // (LoaderOptions::rank / world_size); gradients are averaged over ranks, logged figures are global, and
  // only rank 0 logs progress, writes metrics.jsonl, checkpoints and the export.
  dist::Comm* comm = nullptr;
};

struct TrainResult {
  enum class Status { kCompleted, kInterrupted } status = Status::kCompleted;
  int64_t step = 0;
  int64_t total_steps = 0;
  std::string checkpoint;  // the last checkpoint written
  std::string export_dir;  // set when completed
  std::map<std::string, double> last_metrics;  // the last logged training metrics
  std::vector<std::pair<std::string, double>> first_eval;  // before step 1 (eval.knn_at_init), fresh runs only
  std::vector<std::pair<std::string, double>> last_eval;
  int stop_signal = 0;
};

// Runs `config` (schedule, optim, train, log sections) on `task` with `loader` (micro-batches of
// train.micro_batch). The run directory is train.output_dir. Throws TrainingDiverged, DataError, CheckpointError.
TrainResult train(const Config& config, TrainTask& task, DataLoader& loader, const TrainOptions& options);

// Threads for LibTorch's intra-op pool (train.threads; 0 = the cores this process may use, shared among the
// `processes_per_node` processes of a multi-process run on this node). Returns the number of threads set.
int configure_threads(int requested, int processes_per_node = 1);
torch::Device parse_device(const std::string& device);

}  // namespace nepa
