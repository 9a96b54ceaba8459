// Data-parallel gradient averaging, the part of PyTorch's DistributedDataParallel that the C++ frontend lacks.
// Parameters are packed into buckets of dist.bucket_mb in reverse registration order (the order backward
// produces their gradients), and each parameter's gradient IS its slice of its bucket (DDP's
// gradient_as_bucket_view): backward accumulates into the buckets, nothing is copied. A post-accumulate-grad hook
// counts the gradients in; a bucket whose gradients are all in is all-reduced at once, asynchronously, so
// communication overlaps the rest of backward. Buckets are launched strictly in index order so that every rank
// issues the same sequence of collectives. On accumulation micro-steps the hooks only count.
//
// Nothing here makes the host wait for the device: the collectives are ordered on the device's streams (NCCL),
// and which parameters are trained is settled once, at the first synchronised step, by one host read. A
// parameter that got no gradient on some rank contributes zeros there; one that got none on any rank at that
// first step keeps no gradient for the whole run (so the optimizer skips it, as in a single process). The set may
// not change afterwards: a gradient for a parameter outside it is an error at once (finish), and step_usage()
// lets the loop find, with the step's other figures, a parameter of the set that no rank trained.
#pragma once

#include <torch/types.h>

#include <memory>
#include <optional>
#include <vector>

#include "nepa/dist/comm.h"

namespace nepa::dist {

class GradSync {
 public:
  // `params`: the trained parameters (requires_grad), in registration order. With a world of one nothing is
  // installed and every call returns at once.
  GradSync(Comm& comm, std::vector<torch::Tensor> params, double bucket_mb);
  ~GradSync();
  GradSync(const GradSync&) = delete;
  GradSync& operator=(const GradSync&) = delete;

  // Before the backward of each micro-batch; `sync` = this is the last micro-batch of the optimizer step. The
  // first call of a step zeroes the buckets and makes every trained parameter's gradient its view of them.
  void begin(bool sync);
  // After that backward: launches what is left, orders the device after the reductions (on Gloo: waits for
  // them), and leaves every gradient averaged over the ranks. Throws DistError for a gradient that came to a
  // parameter outside the run's trained set.
  void finish();

  // After a synchronised finish(): for each parameter, 1 when this rank produced a gradient for it during the
  // step (float64, on the group's device, copied there without a host wait), to be summed over the ranks with
  // the step's figures and checked by first_untrained(). Undefined with a world of one.
  torch::Tensor step_usage() const;
  // The first parameter (index into `params`) of the trained set whose summed step_usage() is 0, if any.
  std::optional<size_t> first_untrained(const std::vector<double>& summed_usage) const;

  int64_t num_buckets() const;
  // Seconds the last finish() spent waiting for reductions (communication not hidden behind backward; 0 on
  // NCCL, where the host does not wait).
  double last_wait_seconds() const;

  struct Impl;  // public only so that the autograd hook (grad_sync.cpp) can name it

 private:
  std::unique_ptr<Impl> impl_;
};

// Copies rank 0's parameters and buffers into every rank's (before training, so all replicas start equal).
void broadcast_module_state(Comm& comm, const std::vector<torch::Tensor>& tensors);

}  // namespace nepa::dist
