// The only file that includes c10d's process-group headers. It is compiled on its own (src/CMakeLists.txt):
// with USE_C10D_GLOO, Debian's gloo headers (the Gloo implementation itself lives in libtorch_cpu; see
// third_party/NOTES.md), and USE_C10D_NCCL when LibTorch has CUDA.
#include "nepa/dist/comm.h"

#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <c10/util/Logging.h>
#include <torch/torch.h>
#include <unistd.h>

#ifdef NEPA_WITH_NCCL
#include <c10/cuda/CUDAFunctions.h>
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <algorithm>
#include <cstdlib>
#include <regex>
#include <sstream>
#include <thread>

namespace nepa::dist {

namespace {

std::string message_of(const std::exception& e) {
  if (auto* c10e = dynamic_cast<const c10::Error*>(&e)) return c10e->what_without_backtrace();
  return e.what();
}

// Under the store's prefix (store_prefix: one per torchrun attempt). A rank that stops on its own error leaves
// failed/<rank> (its message); a rank that saw the group fail leaves survivor/<rank>; each bumps failed/count
// once, so that one store round trip tells a waiting rank whether to look.
std::string failure_key(int rank) { return "failed/" + std::to_string(rank); }
std::string survivor_key(int rank) { return "survivor/" + std::to_string(rank); }
std::string host_key(int rank) { return "host/" + std::to_string(rank); }
constexpr const char* kFailureCount = "failed/count";

std::string this_host() {
  char name[256] = {0};
  if (::gethostname(name, sizeof(name) - 1) != 0) return "?";
  return name;
}

// No fmt here: this file sees LibTorch's bundled fmt headers, not Debian's (third_party/NOTES.md).
template <class... Args>
std::string cat(const Args&... args) {
  std::ostringstream out;
  (out << ... << args);
  return out.str();
}

}  // namespace

struct Comm::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

struct Comm::Pending::Impl {
  const Comm* comm = nullptr;
  const char* op = "";
  c10::intrusive_ptr<c10d::Work> work;
};

bool nccl_available() {
#ifdef NEPA_WITH_NCCL
  return true;
#else
  return false;
#endif
}

std::vector<std::pair<std::string, std::string>> nccl_env_defaults(
    const std::function<const char*(const char*)>& getenv) {
  std::vector<std::pair<std::string, std::string>> set;
  auto unset = [&](const char* name) {
    const char* v = getenv(name);
    return v == nullptr || *v == '\0';
  };
  // Its deprecated spelling counts as the user's choice too (ProcessGroupNCCL reads both).
  if (unset("TORCH_NCCL_ASYNC_ERROR_HANDLING") && unset("NCCL_ASYNC_ERROR_HANDLING"))
    set.emplace_back("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2");
  return set;
}

std::string resolve_backend(const std::string& configured, const torch::Device& device) {
  std::string b = configured;
  if (b == "auto") b = device.is_cuda() ? "nccl" : "gloo";
  if (b == "nccl") {
    if (!device.is_cuda())
      throw DistError("dist.backend nccl needs train.device cuda, got " + device.str() + " (use gloo on CPU)");
    if (!nccl_available()) throw DistError("dist.backend nccl: this build's LibTorch has no CUDA/NCCL");
  } else if (b != "gloo") {
    throw DistError("dist.backend must be auto, nccl or gloo, got '" + configured + "'");
  }
  return b;
}

Comm::Comm() = default;

Comm::Comm(const Launch& launch, const std::string& backend, std::chrono::milliseconds timeout, torch::Device device)
    : impl_(std::make_unique<Impl>()),
      rank_(launch.rank),
      world_size_(launch.world_size),
      backend_(backend),
      device_(device),
      timeout_(timeout) {
  const std::string where = launch.master_addr + ":" + std::to_string(launch.master_port);
  try {
    c10d::TCPStoreOptions so;
    so.port = static_cast<uint16_t>(launch.master_port);
    so.isServer = launch.rank == 0 && !launch.agent_store;
    so.numWorkers = launch.world_size;
    so.waitWorkers = true;
    so.timeout = timeout;
    so.multiTenant = true;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(launch.master_addr, so);
    impl_->store = c10::make_intrusive<c10d::PrefixStore>(store_prefix(launch), tcp);
  } catch (const std::exception& e) {
    throw DistError(cat("rank ", rank_, " of ", world_size_, ": cannot reach the rendezvous store at ", where,
                        " within ", timeout.count() / 1000, " s: ", message_of(e)));
  }
  // The backends' own timeouts are a backstop: the host-side wait (wait_for) ends a collective at dist.timeout_s,
  // the same way on Gloo and NCCL, and names the ranks that did not answer.
  const auto backend_timeout = timeout + std::chrono::seconds(10);
  try {
    if (backend == "gloo") {
      auto opts = c10d::ProcessGroupGloo::Options::create(backend_timeout);
      // GLOO_SOCKET_IFNAME names the interface as for PyTorch; otherwise this host's address (loopback when
      // the hostname does not resolve to a bindable one).
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME"); ifname && *ifname)
        opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      else
        opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, rank_, world_size_, opts);
    } else if (backend == "nccl") {
#ifdef NEPA_WITH_NCCL
      if (!device_.is_cuda() || !device_.has_index())
        throw DistError(cat("rank ", rank_, ": the nccl group needs this process's GPU, got ", device_.str()));
      c10::cuda::set_device(device_.index());
      // Read by ProcessGroupNCCL's constructor; set while this is the only thread that reads the environment.
      for (const auto& [name, value] : nccl_env_defaults([](const char* n) { return std::getenv(n); }))
        ::setenv(name.c_str(), value.c_str(), /*overwrite=*/0);
      auto opts = c10d::ProcessGroupNCCL::Options::create();
      opts->timeout = backend_timeout;
      impl_->backend = c10::make_intrusive<c10d::ProcessGroupNCCL>(impl_->store, rank_, world_size_, opts);
#else
      throw DistError("dist.backend nccl: this build's LibTorch has no CUDA/NCCL");
#endif
    } else {
      throw DistError("unknown backend '" + backend + "'");
    }
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    throw DistError(cat("rank ", rank_, " of ", world_size_, ": cannot form the ", backend, " process group (store ",
                        where, "): ", message_of(e)));
  }
  // Host names, for failure reports: rank 0's is kept, since its store is gone when it is the one that died.
  host_ = this_host();
  try {
    impl_->store->set(host_key(rank_), std::vector<uint8_t>(host_.begin(), host_.end()));
    auto bytes = impl_->store->get(host_key(0));
    host0_ = std::string(bytes.begin(), bytes.end());
  } catch (const std::exception& e) {
    throw DistError(cat("rank ", rank_, " of ", world_size_, ": the rendezvous store at ", where,
                        " stopped answering: ", message_of(e)));
  }
}

Comm::~Comm() {
  if (!impl_ || !impl_->backend) return;
  // NCCL's communicators are torn down explicitly (as destroy_process_group does); after a failed collective
  // a clean shutdown could wait on a peer that is gone, so abort instead.
  try {
    if (failed_) impl_->backend->abort();
    else impl_->backend->shutdown();
  } catch (...) {
  }
}

void Comm::require_on_device(const char* op, const torch::Tensor& tensor) const {
  if (tensor.device() != device_ || !tensor.is_contiguous())
    throw DistError(cat("rank ", rank_, ": ", op, " was handed a ", tensor.is_contiguous() ? "" : "non-contiguous ",
                        "tensor on ", tensor.device().str(), ", but this ", backend_, " group works on contiguous ",
                        "tensors on ", device_.str()));
}

void Comm::fail(const std::string& op, const std::string& why, bool timed_out) const {
  failed_ = true;
  // From here on LibTorch's own warnings about the broken group (TCPStore logs each failed store call with a
  // stack trace) are noise beside the one line below.
  FLAGS_caffe2_log_level = std::max(FLAGS_caffe2_log_level, 2);
  // Gloo prefixes its messages with its source location.
  static const std::regex source_location(R"(\[[^\]]*\.(cc|cpp|h|hpp):[0-9]+\] ?)");
  throw PeerFailure(cat("rank ", rank_, " of ", world_size_, " (", host_, "): ", op, " failed: ", diagnose(timed_out),
                        " (", std::regex_replace(why, source_location, ""), ")"));
}

std::string Comm::diagnose(bool timed_out) const {
  if (!impl_ || !impl_->store) return "the group is broken";
  auto& store = *impl_->store;
  auto host_of = [&](int r) {
    try {
      auto bytes = store.get(host_key(r));
      return std::string(bytes.begin(), bytes.end());
    } catch (const std::exception&) {
      return std::string("?");
    }
  };
  try {
    store.set(survivor_key(rank_), std::vector<uint8_t>{'1'});
    store.add(kFailureCount, 1);
  } catch (const std::exception&) {
    return cat("rank 0 (", host0_, ") is gone: the rendezvous store it served stopped answering");
  }
  // The other ranks that are still alive meet the broken group at their next collective and check in here;
  // whoever has neither checked in nor reported an error after a few seconds is the rank that failed.
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(3);
  try {
    while (store.add(kFailureCount, 0) < world_size_ && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    std::vector<int> silent;
    std::string reported;
    int reporters = 0;
    for (int r = 0; r < world_size_; ++r) {
      if (r == rank_) continue;
      if (store.check({failure_key(r)})) {
        if (reporters++ == 0) {
          auto bytes = store.get(failure_key(r));
          reported = cat("rank ", r, " (", host_of(r), ") reported: ", std::string(bytes.begin(), bytes.end()));
        }
      } else if (!store.check({survivor_key(r)})) {
        silent.push_back(r);
      }
    }
    if (reporters > 0) return reported + (reporters > 1 ? cat(" (and ", reporters - 1, " more ranks failed)") : "");
    if (silent.empty()) return "the group is broken, every other rank saw it too";
    std::string names;
    for (size_t i = 0; i < silent.size() && i < 8; ++i)
      names += cat(i ? ", " : "", silent[i], " (", host_of(silent[i]), ")");
    if (silent.size() > 8) names += cat(" and ", silent.size() - 8, " more");
    return timed_out ? cat("no answer from rank(s) ", names, " within dist.timeout_s = ", timeout_.count() / 1000.0, " s")
                     : cat("rank(s) ", names, " stopped answering (killed, crashed or hung)");
  } catch (const std::exception&) {
    return cat("rank 0 (", host0_, ") is gone: the rendezvous store it served stopped answering");
  }
}

void Comm::report_failure(const std::string& what) noexcept {
  failed_ = true;  // this rank is leaving on an error: its peers may sit in a collective, so abort on the way out
  FLAGS_caffe2_log_level = std::max(FLAGS_caffe2_log_level, 2);  // as in fail(): no stack traces from the store
  if (!impl_ || !impl_->store) return;
  try {
    impl_->store->set(failure_key(rank_), std::vector<uint8_t>(what.begin(), what.end()));
    impl_->store->add(kFailureCount, 1);
  } catch (...) {
  }
}

void Comm::wait_for(Pending::Impl& p) const {
  poll_until([&] { return p.work->isCompleted(); }, p.op);
  try {
    // Rethrows the work's error; on NCCL it also makes the current stream wait for the collective.
    p.work->wait();
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    fail(p.op, message_of(e));
  }
}

void Comm::poll_until(const std::function<bool()>& done, const char* op) const {
  if (!impl_ || !impl_->store) {  // a world of one: nobody to watch
    for (int polls = 0; !done(); ++polls)
      if (polls < 64) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));
    return;
  }
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  // A peer's report is looked for once a second: a failed rank ends the others in about a second, and a healthy
  // wait (gradient buckets: milliseconds) never touches the store.
  const auto check_every = std::min<std::chrono::milliseconds>(std::chrono::seconds(1), timeout_ / 4);
  auto next_check = start + check_every;
  try {
    for (int polls = 0; !done(); ++polls) {
      const auto now = Clock::now();
      if (now - start >= timeout_)
        fail(op, cat("no result within dist.timeout_s = ", timeout_.count() / 1000.0, " s"), /*timed_out=*/true);
      if (now >= next_check) {
        int64_t failures = 0;
        // A store that went with rank 0 makes TCPStore log a stack trace before it throws: muted for this call
        // (once a second), since the throw is reported below in one line.
        const int log_level = FLAGS_caffe2_log_level;
        FLAGS_caffe2_log_level = std::max(log_level, 2);
        try {
          failures = impl_->store->add(kFailureCount, 0);
        } catch (const std::exception& e) {
          fail(op, cat("the rendezvous store stopped answering: ", message_of(e)));
        }
        FLAGS_caffe2_log_level = log_level;
        if (failures > 0) fail(op, "a peer saw the group fail");
        next_check = now + check_every;
      }
      // Spin briefly (small collectives finish in microseconds), then sleep in short slices.
      if (polls < 64) std::this_thread::yield();
      else std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  } catch (const DistError&) {
    throw;
  } catch (const std::exception& e) {
    fail(op, message_of(e));
  }
}

void Comm::Pending::wait() {
  if (!impl_) return;
  auto impl = std::move(impl_);
  impl->comm->wait_for(*impl);
}

void Comm::Pending::order() {
  if (!impl_) return;
  auto impl = std::move(impl_);
  impl->comm->order_after(*impl);
}

void Comm::order_after(Pending::Impl& p) const {
  if (backend_ != "nccl") return wait_for(p);
  try {
    p.work->wait();  // without TORCH_NCCL_BLOCKING_WAIT: the current stream waits for NCCL's, the host does not
  } catch (const std::exception& e) {
    fail(p.op, message_of(e));
  }
}

Comm::Pending Comm::all_reduce_async(const torch::Tensor& tensor) {
  Pending p;
  if (world_size_ == 1) return p;
  require_on_device("all_reduce", tensor);
  std::vector<at::Tensor> ts{tensor};
  try {
    p.impl_ = std::make_shared<Pending::Impl>();
    p.impl_->comm = this;
    p.impl_->op = "all_reduce";
    p.impl_->work = impl_->backend->allreduce(ts);
  } catch (const std::exception& e) {
    fail("all_reduce", message_of(e));
  }
  return p;
}

void Comm::all_reduce(const torch::Tensor& tensor) {
  if (world_size_ == 1) return;
  if (tensor.device() == device_ && tensor.is_contiguous()) {
    all_reduce_async(tensor).wait();
    return;
  }
  torch::Tensor staged = tensor.to(device_).contiguous();
  if (staged.data_ptr() == tensor.data_ptr()) staged = staged.clone();  // never reduce into the caller's view
  all_reduce_async(staged).wait();
  torch::NoGradGuard no_grad;
  tensor.copy_(staged);
}

std::vector<double> Comm::all_reduce(const std::vector<double>& values) {
  if (world_size_ == 1 || values.empty()) return values;
  torch::Tensor t = torch::tensor(values, torch::kFloat64).to(device_);
  all_reduce(t);
  t = t.cpu();
  return std::vector<double>(t.data_ptr<double>(), t.data_ptr<double>() + t.numel());
}

torch::Tensor Comm::all_gather_rows(const torch::Tensor& local) {
  if (world_size_ == 1) return local;
  // Through all-reduce (sum): each rank writes its rows into zeros at its offset. One collective for the counts,
  // one for the rows; Gloo and NCCL both do it, and it is not on any hot path.
  std::vector<double> counts(world_size_, 0.0);
  counts[rank_] = static_cast<double>(local.size(0));
  counts = all_reduce(counts);
  int64_t offset = 0, total = 0;
  for (int r = 0; r < world_size_; ++r) {
    if (r < rank_) offset += static_cast<int64_t>(counts[r]);
    total += static_cast<int64_t>(counts[r]);
  }
  std::vector<int64_t> shape = local.sizes().vec();
  shape[0] = total;
  torch::Tensor all = torch::zeros(shape, local.options().device(device_));
  all.narrow(0, offset, local.size(0)).copy_(local);
  all_reduce(all);
  return all.to(local.device());
}

void Comm::broadcast(const std::vector<torch::Tensor>& tensors, int root) {
  if (world_size_ == 1) return;
  c10d::BroadcastOptions opts;
  opts.rootRank = root;
  for (const auto& t : tensors) require_on_device("broadcast", t);
  for (const auto& t : tensors) {
    std::vector<at::Tensor> ts{t};
    Pending::Impl p;
    p.comm = this;
    p.op = "broadcast";
    try {
      p.work = impl_->backend->broadcast(ts, opts);
    } catch (const std::exception& e) {
      fail("broadcast", message_of(e));
    }
    wait_for(p);
  }
}

void Comm::barrier() {
  if (world_size_ == 1) return;
  if (backend_ == "nccl") {
    // ProcessGroupNCCL's barrier guesses the device from the rank; a one-element all-reduce on ours is exact.
    // The host waits for it: a barrier orders the processes, not only the streams.
    torch::Tensor one = torch::ones({1}, torch::TensorOptions().dtype(torch::kFloat32).device(device_));
    all_reduce_async(one).wait();
    (void)one.item<float>();
    return;
  }
  Pending::Impl p;
  p.comm = this;
  p.op = "barrier";
  try {
    p.work = impl_->backend->barrier();
  } catch (const std::exception& e) {
    fail("barrier", message_of(e));
  }
  wait_for(p);
}

}  // namespace nepa::dist
