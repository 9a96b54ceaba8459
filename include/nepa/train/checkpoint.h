// Training checkpoints: one safetensors file per save holding everything a run needs to continue exactly —
// model tensors ("model.*"), AdamW moments and step counts ("optim.<group>.<index>.*"), task extras such as an
// EMA ("extra.*"), every rank's torch generator states ("rng.<rank>.cpu", "rng.<rank>.cuda") — with the
// position (step, epoch, batch) and the effective config in the metadata. Python can open it with `safetensors.torch.load_file`.
// Files are written atomically (temp, fsync, rename), then the `latest` pointer is replaced the same way, so
// a run killed at any moment leaves the previous checkpoint and a pointer to it.
#pragma once

#include <torch/nn/module.h>

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

// How load_checkpoint set this process's generators.
enum class GeneratorRestore {
  kOwn,     // from this rank's own saved states
  kShared,  // from the one set of states a checkpoint written before per-rank states holds ("rng.cpu")
  kNone,    // the checkpoint holds none for this rank (written by fewer processes): left as they were
};

struct CheckpointContent {
  TrainState state;
  GeneratorRestore generators = GeneratorRestore::kNone;
  std::string config_yaml;                      // effective config of the run that wrote it
  std::map<std::string, torch::Tensor> extra;   // task extras, names without the "extra." prefix
};

// This process's generator states under the names of `rank`: "rng.<rank>.cpu", and "rng.<rank>.cuda" (the
// generator of `device`, the current GPU when it has no index) when `device` is a GPU.
std::map<std::string, torch::Tensor> generator_states(int rank, const torch::Device& device);
// Sets this process's generators to the states generator_states(rank, device) returned.
void set_generator_states(const std::map<std::string, torch::Tensor>& states, int rank, const torch::Device& device);

// Writes `path` atomically. `groups` must be the groups the optimizer was built from (same order). `generators`:
// every rank's generator_states (a data-parallel run gathers them to rank 0); by default this process's, as
// rank 0 on the CPU.
void save_checkpoint(const std::string& path, const torch::nn::Module& model, const AdamW& optimizer,
                     const std::vector<ParamGroup>& groups, const TrainState& state, const std::string& config_yaml,
                     const std::map<std::string, torch::Tensor>& extra = {},
                     const std::map<std::string, torch::Tensor>& generators = generator_states(0, torch::kCPU));

// Restores model tensors, optimizer state and the generator states of `rank` (its CPU generator and that of
// `device` when it is a GPU) in place. Any mismatch (missing tensor, shape, group layout) throws CheckpointError
// naming the file and the tensor before anything is modified.
CheckpointContent load_checkpoint(const std::string& path, torch::nn::Module& model, AdamW& optimizer,
                                  const std::vector<ParamGroup>& groups, int rank = 0,
                                  const torch::Device& device = torch::kCPU);

// The metadata only (position and config), without touching any model.
CheckpointContent read_checkpoint_info(const std::string& path);

// <run>/checkpoints: step_00001000.safetensors files, a `latest` text file naming the newest, and pruning to
// the last `keep_last`.
class CheckpointDir {
 public:
  CheckpointDir(std::string dir, int keep_last);
  const std::string& dir() const { return dir_; }
  std::string path_for_step(int64_t step) const;
  // Saves (as save_checkpoint), points `latest` at it, removes older step files beyond keep_last and stale temp
  // files.
  std::string save(const torch::nn::Module& model, const AdamW& optimizer,
                   const std::vector<ParamGroup>& groups, const TrainState& state, const std::string& config_yaml,
                   const std::map<std::string, torch::Tensor>& extra = {},
                   const std::map<std::string, torch::Tensor>& generators = generator_states(0, torch::kCPU));
  // The checkpoint `latest` names (if it exists), else the highest-step file, else nothing.
  std::optional<std::string> latest() const;
  // The newest checkpoint whose header and metadata read (`latest` first, then by step, newest first); each newer
  // one that did not read goes to `unreadable` as "<file>: <why>".
  std::optional<std::string> newest_readable(std::vector<std::string>* unreadable) const;
  // Removes the temp files (`*.tmp.<pid>`) of writers whose process is gone; returns how many.
  int remove_stale_temp_files() const;

 private:
  std::string dir_;
  int keep_last_;
};

// --resume: "" = start fresh, "auto" = the newest readable checkpoint in `run_dir`/checkpoints if any (else
// fresh; newer unreadable ones, e.g. truncated by a failing disk, are skipped and described in `warnings`), else a
// file path (or a run directory) that must exist. Returns the checkpoint file to load, or nothing.
std::optional<std::string> resolve_resume(const std::string& resume, const std::string& run_dir,
                                          std::vector<std::string>* warnings = nullptr);

}  // namespace nepa
