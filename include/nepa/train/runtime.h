// What every executable does before its task: read the launcher's environment (dist/launch.h), check the config
// for that many processes, set up logging, threads and the device, and join the process group. And how it ends:
// errors become one log line and an exit code, and the other ranks are told why this one stopped.
#pragma once

#include <torch/types.h>

#include <functional>
#include <memory>
#include <string>

#include "nepa/config/config.h"
#include "nepa/data/loader.h"
#include "nepa/dist/comm.h"
#include "nepa/dist/launch.h"
#include "nepa/train/trainer.h"

namespace nepa {

struct Runtime {
  dist::Launch launch;
  std::shared_ptr<dist::Comm> comm;  // null in a single process; guarded_main keeps it until the end
  torch::Device device = torch::kCPU;
  int threads = 1;

  bool is_main() const { return launch.rank == 0; }
  dist::Comm* comm_ptr() const { return comm.get(); }
  // The training loader of this process: train.micro_batch images per batch, train.seed, this device, and
  // this rank's shard of every epoch.
  LoaderOptions train_loader_options(const Config& config) const;
};

// Rank 0 logs to the console and to <train.output_dir>/<log_file>; the other ranks log warnings and errors only,
// each line prefixed with its rank. train.device "cuda" becomes cuda:(LOCAL_RANK % visible GPUs)
// (dist::device_for_rank); train.threads 0 splits this node's cores among its processes; torch's generators are
// seeded with train.seed + rank. Throws ConfigError, DistError.
Runtime start_runtime(const LoadedConfig& loaded, const std::string& log_file = "train.log");

// The run every training executable makes once its task and loader exist: rank 0 saves the effective config as
// <train.output_dir>/config.yaml, the shared loop runs (`resume` as TrainOptions::resume), and the outcome is
// logged: how to continue after a signal, or "done: N steps; run directory ...". The caller adds its figures.
TrainResult run_training(const Config& config, TrainTask& task, DataLoader& loader, const std::string& resume,
                         const Runtime& rt);

// Runs `body` and maps what escapes it to an exit code with one error line: 2 for ConfigError (printed alone, as
// the config loader words it), 3 for TrainingDiverged, 1 for anything else. In a multi-process run the failure is
// also left in the rendezvous store, so the other ranks' errors name this rank.
int guarded_main(const std::function<int()>& body);

}  // namespace nepa
