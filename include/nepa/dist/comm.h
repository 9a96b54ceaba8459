// The process group of a data-parallel run, on PyTorch's own c10d engine: a TCPStore rendezvous, then Gloo
// (CPU tensors) or NCCL (one GPU per process). A world of one opens nothing and every collective returns at
// once, so the training loop calls the same code with and without a launcher.
//
// Every collective must be called in the same order on every rank (c10d's rule). A failure (a peer that exited,
// crashed or went silent for dist.timeout_s) surfaces as DistError naming this rank and, when the failing rank
// managed to say so, that rank and its error.
//
// The host waits for every collective itself, the same way on both backends: it polls the work's completion
// until dist.timeout_s, and once a second asks the rendezvous store whether a peer has reported a failure. On
// Gloo a dead peer usually shows at once as a closed connection; on NCCL nothing would ever show (NCCL's wait()
// only orders streams, and a peer that died leaves the collective spinning on the GPU), so without this a rank
// that failed would hold the others until the watchdog killed them. NCCL's own error handling is set to abort
// the communicators without killing the process (nccl_error_handling_env), so that its errors reach this wait
// and end as the same one-line DistError as on Gloo; the group is then aborted on destruction.
//
// The group works on one device (device()): ProcessGroupNCCL takes tensors on this process's GPU only. The hot
// path (all_reduce_async, broadcast) requires its tensors there and says so when they are not; the conveniences
// for small figures (all_reduce of a tensor, of doubles, all_gather_rows) take tensors anywhere and stage them
// through the group's device, so that evaluation code written on CPU tensors is right on NCCL too.
#pragma once

#include <torch/types.h>

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "nepa/dist/launch.h"

namespace nepa::dist {

// A collective failed because of another rank (its error, its death, its silence), as seen from this one. The
// message names that rank and its host when the store can tell; this rank has already told the others.
class PeerFailure : public DistError {
 public:
  using DistError::DistError;
};

class Comm {
 public:
  // A world of one.
  Comm();
  // Joins the group: rank 0 serves the TCPStore at launch.master_addr:master_port (unless torchrun's agent
  // already does), every rank connects, then the `backend` ("gloo" | "nccl") process group is formed on `device`
  // (this process's GPU for NCCL, from device_for_rank). Keys live under store_prefix(launch). Blocks until all
  // launch.world_size ranks have joined or `timeout` passes.
  Comm(const Launch& launch, const std::string& backend, std::chrono::milliseconds timeout,
       torch::Device device = torch::kCPU);
  ~Comm();
  Comm(const Comm&) = delete;
  Comm& operator=(const Comm&) = delete;

  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  bool is_main() const { return rank_ == 0; }
  const std::string& backend() const { return backend_; }
  const torch::Device& device() const { return device_; }

  // A collective in flight; wait() blocks until `tensor` holds the result, or throws DistError (a failed peer,
  // or no result within dist.timeout_s).
  class Pending {
   public:
    Pending() = default;
    void wait();
    // Work queued on the current stream from here on runs after the collective, without the host waiting for
    // it (NCCL: a stream wait); on Gloo, whose collectives are the host's own work, the same as wait(). A peer
    // that fails meanwhile is found by the next host wait on the group (wait, poll_until).
    void order();
    bool valid() const { return static_cast<bool>(impl_); }

   private:
    friend class Comm;
    struct Impl;
    std::shared_ptr<Impl> impl_;
  };

  // Sum over ranks, in place. `tensor` must be contiguous and on device() (DistError otherwise).
  Pending all_reduce_async(const torch::Tensor& tensor);
  // Sum over ranks, in place, for a tensor anywhere (staged through device() when it is elsewhere).
  void all_reduce(const torch::Tensor& tensor);
  // Sum of doubles over ranks (for metrics and flags), through a float64 tensor on the backend's device.
  std::vector<double> all_reduce(const std::vector<double>& values);
  // Every rank's rows (dim 0) concatenated in rank order, on every rank; other dims must agree. CPU tensors.
  torch::Tensor all_gather_rows(const torch::Tensor& local);
  // Copies `root`'s tensors into every rank's tensors, in place. Contiguous tensors on device().
  void broadcast(const std::vector<torch::Tensor>& tensors, int root = 0);
  void barrier();

  // Blocks until `done()` holds, watching the group as a collective's wait does: DistError naming `op` when a
  // peer reports a failure or dist.timeout_s passes. For waits on the device that a collective stands behind
  // (a step's figures read back after the step's gradient all-reduce), where a dead peer would hang the host.
  void poll_until(const std::function<bool()>& done, const char* op) const;

  // Tells the other ranks why this one is about to exit (best effort, never throws), so that their errors can
  // name it instead of only "connection closed". The group is then aborted, not shut down, when destroyed.
  void report_failure(const std::string& what) noexcept;

 private:
  [[noreturn]] void fail(const std::string& op, const std::string& why, bool timed_out = false) const;
  std::string diagnose(bool timed_out) const;
  void require_on_device(const char* op, const torch::Tensor& tensor) const;
  struct Impl;
  std::unique_ptr<Impl> impl_;
  int rank_ = 0, world_size_ = 1;
  void wait_for(Pending::Impl& work) const;
  void order_after(Pending::Impl& work) const;
  std::string backend_ = "none";
  torch::Device device_ = torch::kCPU;
  std::chrono::milliseconds timeout_{0};
  std::string host_ = "?", host0_ = "?";
  mutable bool failed_ = false;  // a collective failed: shut down by abort, not by a clean shutdown
};

// "gloo" or "nccl" for dist.backend ("auto": nccl when the device is CUDA, gloo otherwise). Throws DistError
// for nccl on a CPU device or a backend this LibTorch was built without.
std::string resolve_backend(const std::string& configured, const torch::Device& device);
bool nccl_available();

// The variables set before an NCCL group is formed, where the environment (`getenv`) does not set them already:
// TORCH_NCCL_ASYNC_ERROR_HANDLING=2 (on an NCCL error or a collective past the group's timeout, the watchdog
// aborts the communicators and fails the work instead of killing the process: the failure then reaches
// Comm's wait and its one-line report). A mode the user set is kept.
std::vector<std::pair<std::string, std::string>> nccl_env_defaults(const std::function<const char*(const char*)>& getenv);

}  // namespace nepa::dist
