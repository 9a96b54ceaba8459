// Data-parallel gradient averaging, the part of PyTorch's DistributedDataParallel that the C++ frontend lacks.
// Parameters are packed into buckets of dist.bucket_mb in reverse registration order (the order backward
// produces their gradients). A post-accumulate-grad hook on every parameter copies its gradient into its
// bucket; a bucket whose gradients are all in is all-reduced at once, asynchronously, so communication overlaps
// the rest of backward. Buckets are launched strictly in index order so that every rank issues the same
// sequence of collectives. On accumulation micro-steps the hooks do nothing.
//
// A parameter that got no gradient on some rank contributes zeros there; one that got none on any rank keeps
// no gradient (so the optimizer skips it, as in a single process). Each bucket carries one "used" flag per
// parameter for that decision, reduced with the gradients in the same collective.
#pragma once

#include <torch/types.h>

#include <memory>
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

  // Before the backward of each micro-batch; `sync` = this is the last micro-batch of the optimizer step.
  void begin(bool sync);
  // After that backward: launches what is left, waits, and leaves every gradient averaged over the ranks.
  void finish();

  int64_t num_buckets() const;
  // Seconds the last finish() spent waiting for reductions (communication not hidden behind backward).
  double last_wait_seconds() const;

  struct Impl;  // public only so that the autograd hook (grad_sync.cpp) can name it

 private:
  std::unique_ptr<Impl> impl_;
};

// Copies rank 0's parameters and buffers into every rank's (before training, so all replicas start equal).
void broadcast_module_state(Comm& comm, const std::vector<torch::Tensor>& tensors);

}  // namespace nepa::dist
