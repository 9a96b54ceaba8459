#include "nepa/dist/grad_sync.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <chrono>
#include <mutex>
#include <string>

namespace nepa::dist {

struct GradSync::Impl {
  struct Bucket {
    torch::Tensor flat;            // the gradients of its parameters, back to back
    std::vector<size_t> params;    // indices into `params`
    std::vector<int64_t> offsets;  // where each parameter's gradient starts in `flat`
    int64_t pending = 0;           // parameters whose gradient has not come in during the synchronised backward
    std::vector<char> filled;      // per parameter of the bucket: its gradient came in during that backward
    Comm::Pending work;
  };

  Comm& comm;
  std::vector<torch::Tensor> params;
  std::vector<torch::Tensor> views;  // per parameter: its gradient's slice of its bucket
  std::vector<Bucket> buckets;
  std::vector<std::pair<size_t, size_t>> slot_of;  // param -> (bucket, position in bucket)
  std::vector<char> got;      // per parameter: a gradient came in during this step (any micro-batch), this rank
  std::vector<char> trained;  // per parameter: some rank trained it at the first synchronised step
  bool learned = false;       // `trained` is known
  bool step_open = false;     // begin() has attached the views for the current step
  std::optional<size_t> stray;  // a parameter outside `trained` that got a gradient
  std::mutex mutex;
  bool sync = false;
  size_t next_launch = 0;
  double wait_seconds = 0;

  explicit Impl(Comm& c) : comm(c) {}

  void launch_in_order() {
    while (next_launch < buckets.size() && buckets[next_launch].pending == 0) {
      Bucket& b = buckets[next_launch++];
      b.work = comm.all_reduce_async(b.flat);
    }
  }

  // Runs on the autograd engine's thread once the parameter's gradient is accumulated (into its view).
  void on_gradient(size_t param_index) {
    std::lock_guard<std::mutex> lock(mutex);
    got[param_index] = 1;
    if (learned && !trained[param_index]) {
      if (!stray) stray = param_index;
      return;
    }
    if (!sync) return;
    const auto [bi, pos] = slot_of[param_index];
    Bucket& b = buckets[bi];
    if (b.filled[pos]) return;
    b.filled[pos] = 1;
    if (--b.pending == 0) launch_in_order();
  }
};

namespace {

struct SyncHook : torch::autograd::PostAccumulateGradHook {
  GradSync::Impl* owner;
  size_t index;
  SyncHook(GradSync::Impl* o, size_t i) : owner(o), index(i) {}
  void operator()(const torch::autograd::Variable& /*tensor*/) override { owner->on_gradient(index); }
};

}  // namespace

GradSync::GradSync(Comm& comm, std::vector<torch::Tensor> params, double bucket_mb)
    : impl_(std::make_unique<Impl>(comm)) {
  auto& m = *impl_;
  if (comm.world_size() == 1) return;
  m.params = std::move(params);
  m.slot_of.resize(m.params.size());
  m.views.resize(m.params.size());
  m.got.assign(m.params.size(), 0);
  m.trained.assign(m.params.size(), 1);
  const auto cap = static_cast<int64_t>(std::max(bucket_mb, 0.0) * 1024 * 1024);
  // Reverse order: the last layers' gradients arrive first in backward.
  std::vector<std::vector<size_t>> groups;
  int64_t bytes = 0;
  for (size_t k = m.params.size(); k-- > 0;) {
    const auto& p = m.params[k];
    TORCH_CHECK(p.requires_grad(), "GradSync: parameter ", k, " does not require grad");
    TORCH_CHECK(p.is_contiguous(), "GradSync: parameter ", k, " is not contiguous (its gradient is a bucket view)");
    const bool new_bucket =
        groups.empty() || bytes >= cap || p.scalar_type() != m.params[groups.back().front()].scalar_type() ||
        p.device() != m.params[groups.back().front()].device();
    if (new_bucket) {
      groups.emplace_back();
      bytes = 0;
    }
    groups.back().push_back(k);
    bytes += p.numel() * static_cast<int64_t>(p.element_size());
  }
  for (size_t bi = 0; bi < groups.size(); ++bi) {
    Impl::Bucket b;
    b.params = groups[bi];
    int64_t n = 0;
    for (size_t pos = 0; pos < b.params.size(); ++pos) {
      b.offsets.push_back(n);
      n += m.params[b.params[pos]].numel();
      m.slot_of[b.params[pos]] = {bi, pos};
    }
    const auto& first = m.params[b.params.front()];
    b.flat = torch::zeros({n}, first.options().requires_grad(false));
    for (size_t pos = 0; pos < b.params.size(); ++pos) {
      const torch::Tensor& p = m.params[b.params[pos]];
      m.views[b.params[pos]] = b.flat.narrow(0, b.offsets[pos], p.numel()).view(p.sizes());
    }
    b.filled.assign(b.params.size(), 0);
    m.buckets.push_back(std::move(b));
  }
  for (size_t k = 0; k < m.params.size(); ++k)
    torch::autograd::impl::set_post_acc_grad_hooks(m.params[k], std::make_unique<SyncHook>(impl_.get(), k));
}

GradSync::~GradSync() {
  for (const auto& p : impl_->params) torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
}

void GradSync::begin(bool sync) {
  auto& m = *impl_;
  if (m.buckets.empty()) return;
  std::lock_guard<std::mutex> lock(m.mutex);
  if (!m.step_open) {
    // The step's first micro-batch: backward accumulates into zeroed buckets through the views.
    torch::NoGradGuard no_grad;
    for (auto& b : m.buckets) b.flat.zero_();
    for (size_t k = 0; k < m.params.size(); ++k)
      if (m.trained[k]) m.params[k].mutable_grad() = m.views[k];
    std::fill(m.got.begin(), m.got.end(), 0);
    m.step_open = true;
  }
  m.sync = sync;
  if (!m.sync) return;
  m.next_launch = 0;
  for (auto& b : m.buckets) {
    b.pending = static_cast<int64_t>(b.params.size());
    std::fill(b.filled.begin(), b.filled.end(), 0);
  }
}

void GradSync::finish() {
  auto& m = *impl_;
  {
    std::lock_guard<std::mutex> lock(m.mutex);
    if (!m.sync) return;
    m.sync = false;
    m.step_open = false;
    if (m.stray)
      throw DistError("data parallel: parameter " + std::to_string(*m.stray) + " (of the trained parameters, in "
                      "registration order) got a gradient, but no rank trained it at the run's first step: the set "
                      "of trained parameters may not change during a run (freeze a parameter with requires_grad false)");
    // Parameters that got no gradient in this backward hold zeros (or earlier micro-batches' sum) in their
    // slice: the rest of the buckets go out as they are.
    for (auto& b : m.buckets) b.pending = 0;
    m.launch_in_order();
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& b : m.buckets) b.work.order();
  m.wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / m.comm.world_size();
  for (auto& b : m.buckets) b.flat.mul_(scale);
  if (!m.learned) {
    // Which parameters does any rank train? Asked once, at the first synchronised step (one host read), and
    // held for the run; those that no rank trained keep no gradient, so the optimizer skips them.
    std::vector<double> got(m.got.begin(), m.got.end());
    got = m.comm.all_reduce(got);
    for (size_t k = 0; k < m.params.size(); ++k) {
      m.trained[k] = got[k] > 0;
      if (!m.trained[k]) m.params[k].mutable_grad().reset();
    }
    m.learned = true;
  }
}

torch::Tensor GradSync::step_usage() const {
  const auto& m = *impl_;
  if (m.buckets.empty()) return {};
  const bool pin = m.comm.device().is_cuda();
  torch::Tensor host = torch::empty({static_cast<int64_t>(m.got.size())},
                                    torch::TensorOptions().dtype(torch::kFloat64).pinned_memory(pin));
  double* p = host.data_ptr<double>();
  for (size_t k = 0; k < m.got.size(); ++k) p[k] = m.got[k] ? 1.0 : 0.0;
  // From page-locked memory, non-blocking: the host does not wait, and the caching host allocator keeps the
  // buffer until the copy has run.
  return host.to(m.comm.device(), /*non_blocking=*/pin);
}

std::optional<size_t> GradSync::first_untrained(const std::vector<double>& summed_usage) const {
  const auto& m = *impl_;
  for (size_t k = 0; k < m.trained.size() && k < summed_usage.size(); ++k)
    if (m.trained[k] && summed_usage[k] == 0) return k;
  return std::nullopt;
}

int64_t GradSync::num_buckets() const { return static_cast<int64_t>(impl_->buckets.size()); }

double GradSync::last_wait_seconds() const { return impl_->wait_seconds; }

void broadcast_module_state(Comm& comm, const std::vector<torch::Tensor>& tensors) {
  if (comm.world_size() == 1) return;
  torch::NoGradGuard no_grad;
  // One collective per (dtype, device) run instead of one per tensor.
  std::vector<std::vector<torch::Tensor>> runs;
  for (const auto& t : tensors) {
    if (runs.empty() || runs.back().front().scalar_type() != t.scalar_type() ||
        runs.back().front().device() != t.device())
      runs.emplace_back();
    runs.back().push_back(t.detach());
  }
  for (const auto& run : runs) {
    std::vector<torch::Tensor> parts;
    for (const auto& t : run) parts.push_back(t.reshape(-1));
    torch::Tensor flat = torch::cat(parts);
    comm.broadcast({flat});
    int64_t at = 0;
    for (const auto& t : run) {
      t.copy_(flat.narrow(0, at, t.numel()).view(t.sizes()));
      at += t.numel();
    }
  }
}

}  // namespace nepa::dist
