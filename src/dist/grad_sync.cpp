#include "nepa/dist/grad_sync.h"

#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>

#include <chrono>
#include <mutex>

namespace nepa::dist {

struct GradSync::Impl {
  struct Bucket {
    torch::Tensor flat;                  // [numel of its parameters + one flag per parameter]
    std::vector<size_t> params;          // indices into `params`
    std::vector<int64_t> offsets;        // where each parameter's gradient starts in `flat`
    int64_t flags_at = 0;                // first flag
    int64_t pending = 0;                 // parameters whose gradient has not come in this step
    std::vector<char> filled;            // per parameter of the bucket: gradient copied this step
    Comm::Pending work;
  };

  Comm& comm;
  std::vector<torch::Tensor> params;
  std::vector<Bucket> buckets;
  std::vector<std::pair<size_t, size_t>> slot_of;  // param -> (bucket, position in bucket)
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

  void on_gradient(size_t param_index) {
    std::lock_guard<std::mutex> lock(mutex);
    if (!sync) return;
    const auto [bi, pos] = slot_of[param_index];
    Bucket& b = buckets[bi];
    if (b.filled[pos]) return;
    const torch::Tensor& p = params[param_index];
    torch::NoGradGuard no_grad;
    b.flat.narrow(0, b.offsets[pos], p.numel()).copy_(p.grad().reshape(-1));
    b.flat[b.flags_at + static_cast<int64_t>(pos)].fill_(1);
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
  const auto cap = static_cast<int64_t>(std::max(bucket_mb, 0.0) * 1024 * 1024);
  // Reverse order: the last layers' gradients arrive first in backward.
  std::vector<std::vector<size_t>> groups;
  int64_t bytes = 0;
  for (size_t k = m.params.size(); k-- > 0;) {
    const auto& p = m.params[k];
    TORCH_CHECK(p.requires_grad(), "GradSync: parameter ", k, " does not require grad");
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
    b.flags_at = n;
    const auto& first = m.params[b.params.front()];
    b.flat = torch::zeros({n + static_cast<int64_t>(b.params.size())}, first.options().requires_grad(false));
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
  std::lock_guard<std::mutex> lock(m.mutex);
  m.sync = sync && !m.buckets.empty();
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
    // Parameters that got no gradient here: zeros and a 0 flag, then the rest of the buckets go out.
    torch::NoGradGuard no_grad;
    for (auto& b : m.buckets) {
      for (size_t pos = 0; pos < b.params.size(); ++pos) {
        if (b.filled[pos]) continue;
        b.flat.narrow(0, b.offsets[pos], m.params[b.params[pos]].numel()).zero_();
        b.flat[b.flags_at + static_cast<int64_t>(pos)].fill_(0);
      }
      b.pending = 0;
    }
    m.launch_in_order();
  }
  const auto t0 = std::chrono::steady_clock::now();
  for (auto& b : m.buckets) b.work.wait();
  m.wait_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  torch::NoGradGuard no_grad;
  const double scale = 1.0 / m.comm.world_size();
  for (auto& b : m.buckets) {
    const torch::Tensor flags = b.flat.narrow(0, b.flags_at, static_cast<int64_t>(b.params.size())).cpu();
    for (size_t pos = 0; pos < b.params.size(); ++pos) {
      if (flags[static_cast<int64_t>(pos)].item<double>() == 0) continue;  // no rank produced a gradient
      torch::Tensor p = m.params[b.params[pos]];
      torch::Tensor avg = b.flat.narrow(0, b.offsets[pos], p.numel()).view(p.sizes()).mul(scale);
      if (p.grad().defined()) p.mutable_grad().copy_(avg);
      else p.mutable_grad() = avg.clone();
    }
  }
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
