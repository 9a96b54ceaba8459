// Who this process is in a multi-process run, read from the launcher's environment: torchrun
// (RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT) or SLURM (SLURM_PROCID,
// SLURM_NTASKS, SLURM_LOCALID, SLURM_NODELIST, ...). Without either, a single process (world size 1).
#pragma once

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>

#include "nepa/config/config.h"

namespace nepa::dist {

// A launch or communication failure. The message names the rank and, where known, the variable or peer.
class DistError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct Launch {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;        // index of this process on its node (its GPU with NCCL)
  int local_world_size = 1;  // processes on this node (they share its cores)
  std::string master_addr = "127.0.0.1";
  int master_port = 29500;
  std::string launcher = "none";  // none | torchrun | slurm
  bool agent_store = false;       // torchrun's agent already serves the TCPStore at master_addr:master_port
  int restart_count = 0;          // torchrun --max-restarts: which attempt this is (TORCHELASTIC_RESTART_COUNT)

  bool distributed() const { return world_size > 1; }
};

// Reads the environment through `getenv` (std::getenv by default; tests pass a map). torchrun's variables win
// over SLURM's (torchrun inside an allocation); dist.master_addr / dist.master_port fill in what SLURM does not
// say (MASTER_ADDR / MASTER_PORT still win). Throws DistError naming the variable for inconsistent values.
using Getenv = std::function<std::optional<std::string>(const std::string&)>;
Launch launch_from_env(const DistConfig& config, const Getenv& getenv = {});

// The first host of a SLURM node list: "gpu[03-05,09],cpu1" -> "gpu03".
std::string first_slurm_host(const std::string& nodelist);

// The key prefix of this attempt in the rendezvous store: "nepa/<restart_count>/". torchrun's agent keeps its
// store across restarts (--max-restarts), so keys of a fixed prefix would hand the next attempt the previous
// attempt's NCCL unique id and failure reports; PyTorch prefixes its own keys the same way.
std::string store_prefix(const Launch& launch);

// The device this process trains on, from train.device and the launch: "cpu" stays; "cuda" becomes
// cuda:(local_rank % device_count), which is right both when every process of a node sees all its GPUs
// (torchrun, srun) and when the scheduler gives each task one (--gpus-per-task=1, --gpu-bind, containers:
// device_count 1, every task on its own cuda:0). "cuda:N" is taken as written for one process per node and
// refused with several (they would all share GPU N). Throws DistError naming train.device.
std::string device_for_rank(const std::string& train_device, const Launch& launch, int cuda_device_count);

}  // namespace nepa::dist
