// Training checkpoints: one safetensors file per save holding everything a run needs to continue exactly —
// model tensors ("model.*"), AdamW moments and step counts ("optim.<group>.<index>.*"), task extras such as an
// EMA ("extra.*"), the torch generator states ("rng.*") — with the position (step, epoch, batch) and the
// effective config in the metadata. Python can open it with `safetensors.torch.load_file`.
// Files are written atomically (temp, fsync, rename), then the `latest` pointer is replaced the same way, so
// a run killed at any moment leaves the previous checkpoint and a pointer to it.
#pragma once

#include <torch/nn/module.h>
#include <torch/optim/optimizer.h>

#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

#include "nepa/train/optim.h"

namespace nepa {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Where a run stands after `step` optimizer steps; (epoch, batch) is the next micro-batch to read, counted per
// process: with W processes a micro-batch index b is the epoch position b x micro_batch x W samples.
struct TrainState {
  int64_t step = 0;
  int64_t epoch = 0;
  int64_t batch = 0;
  int64_t samples_seen = 0;
  int64_t world_size = 1;  // processes of the run that wrote it; 0 = not recorded (written before it was)
};

struct CheckpointContent {
  TrainState state;
  std::string config_yaml;                      // effective config of the run that wrote it
  std::map<std::string, torch::Tensor> extra;   // task extras, names without the "extra." prefix
};

// Writes `path` atomically. `groups` must be the groups the optimizer was built from (same order).
void save_checkpoint(const std::string& path, const torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                     const std::vector<ParamGroup>& groups, const TrainState& state, const std::string& config_yaml,
                     const std::map<std::string, torch::Tensor>& extra = {});

// Restores model tensors, optimizer state and generator states in place. Any mismatch (missing tensor, shape,
// group layout) throws CheckpointError naming the file and the tensor before anything is modified.
CheckpointContent load_checkpoint(const std::string& path, torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                                  const std::vector<ParamGroup>& groups);

// The metadata only (position and config), without touching any model.
CheckpointContent read_checkpoint_info(const std::string& path);

// <run>/checkpoints: step_00001000.safetensors files, a `latest` text file naming the newest, and pruning to
// the last `keep_last`.
class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int keep_last);
  const std::string& dir() const { return dir_; }
  std::string path_for_step(int64_t step) const;
  // Saves, points `latest` at it, removes older step files beyond keep_last and stale temp files.
  std::string save(const torch::nn::Module& model, torch::optim::Optimizer& optimizer,
                   const std::vector<ParamGroup>& groups, const TrainState& state, const std::string& config_yaml,
                   const std::map<std::string, torch::Tensor>& extra = {});
  // The checkpoint `latest` names (if it exists), else the highest-step file, else nothing.
  std::optional<std::string> latest() const;

 private:
  std::string dir_;
  int keep_last_;
};

// --resume: "" = start fresh, "auto" = latest in `run_dir`/checkpoints if any (else fresh), else a file path
// (or a run directory) that must exist. Returns the checkpoint file to load, or nothing.
std::optional<std::string> resolve_resume(const std::string& resume, const std::string& run_dir);

}  // namespace nepa
