#include "nepa/train/runtime.h"

#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_color_sinks.h>
#include <spdlog/spdlog.h>
#include <torch/torch.h>

#include <dlfcn.h>
#include <malloc.h>

#include <climits>
#include <filesystem>
#include <iostream>

#include "nepa/train/signals.h"
#include "nepa/train/trainer.h"

namespace nepa {
namespace fs = std::filesystem;

namespace {

// The process group of this process, kept alive past the Runtime (which an escaping exception destroys) so that
// guarded_main can still report the failure through it.
std::shared_ptr<dist::Comm> g_comm;

void setup_logging(const Config& cfg, const dist::Launch& launch, const std::string& log_file) {
  std::vector<spdlog::sink_ptr> sinks{std::make_shared<spdlog::sinks::stdout_color_sink_mt>()};
  const bool main_rank = launch.rank == 0;
  if (main_rank && !log_file.empty()) {
    fs::create_directories(cfg.train.output_dir);
    sinks.push_back(
        std::make_shared<spdlog::sinks::basic_file_sink_mt>((fs::path(cfg.train.output_dir) / log_file).string()));
  }
  auto logger = std::make_shared<spdlog::logger>("nepa", sinks.begin(), sinks.end());
  if (launch.distributed())
    logger->set_pattern(fmt::format("[%Y-%m-%d %H:%M:%S] [rank {}] %^%l%$ %v", launch.rank));
  else
    logger->set_pattern("[%Y-%m-%d %H:%M:%S] %^%l%$ %v");
  auto level = spdlog::level::from_str(cfg.log.level);
  if (!main_rank) level = std::max(level, spdlog::level::warn);
  logger->set_level(level);
  spdlog::set_default_logger(logger);
}

// The allocator this process runs on, found by its symbols (linked, cmake/NepaAllocator.cmake, or preloaded by
// the user). glibc's default maps every large block afresh and returns it on free, so each step faults its
// activations in again (bench/allocator.py: 1.3 M minor faults per rank in 120 demo steps, 0.92x the img/s of the
// tuned setting); keeping freed memory in the heap removes that, as tcmalloc does by itself.
std::string tune_allocator() {
  if (dlsym(RTLD_DEFAULT, "MallocExtension_GetNumericProperty")) return "tcmalloc";
  if (dlsym(RTLD_DEFAULT, "mallctl")) return "jemalloc (bench/allocator.py measured it 0.86x glibc's img/s here)";
  const bool ok = mallopt(M_MMAP_MAX, 0) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
  if (!ok) throw std::runtime_error("glibc refused the allocator settings (mallopt M_MMAP_MAX / M_TRIM_THRESHOLD)");
  return "glibc, freed memory kept for reuse (M_MMAP_MAX 0, M_TRIM_THRESHOLD 2 GiB)";
}

}  // namespace

Runtime start_runtime(const LoadedConfig& loaded, const std::string& log_file) {
  const Config& cfg = loaded.config;
  Runtime rt;
  // First: a stop signal during start-up (scanning a large dataset, joining the group) is then kept for the loop,
  // which ends the run cleanly before its first step, instead of the signal's default action.
  install_stop_handlers();
  rt.launch = dist::launch_from_env(cfg.dist);
  validate_for_training(cfg, loaded.origins, rt.launch.world_size);
  setup_logging(cfg, rt.launch, log_file);
  spdlog::info("memory allocator: {}", tune_allocator());
  rt.threads = configure_threads(cfg.train.threads, rt.launch.local_world_size);
  const int gpus = torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
  rt.device = parse_device(dist::device_for_rank(cfg.train.device, rt.launch, gpus));
  // Set either way: LibTorch's own defaults differ between matmuls (IEEE) and cuDNN convolutions (TF32).
  at::globalContext().setAllowTF32CuBLAS(cfg.train.tf32);
  at::globalContext().setAllowTF32CuDNN(cfg.train.tf32);
  if (rt.device.is_cuda())
    spdlog::info("float32 matmuls and convolutions: {} (train.tf32)", cfg.train.tf32 ? "TF32" : "IEEE float32");
  // The model's randomness (init, drop-path, dropout, RoPE augmentation, masking) differs per rank, or every
  // replica would draw the same masks for its own samples; init differences do not matter (rank 0's weights are
  // broadcast). The data order does not come from here: it is global (data/loader).
  torch::manual_seed(static_cast<uint64_t>(cfg.train.seed) + static_cast<uint64_t>(rt.launch.rank));
  if (rt.launch.distributed()) {
    const std::string backend = dist::resolve_backend(cfg.dist.backend, rt.device);
    spdlog::info("joining {} processes ({}, {}) at {}:{}", rt.launch.world_size, backend, rt.launch.launcher,
                 rt.launch.master_addr, rt.launch.master_port);
    rt.comm = std::make_shared<dist::Comm>(rt.launch, backend,
                                           std::chrono::milliseconds(int64_t{cfg.dist.timeout_s} * 1000), rt.device);
    g_comm = rt.comm;
  }
  return rt;
}

LoaderOptions Runtime::train_loader_options(const Config& config) const {
  LoaderOptions opts;
  opts.batch_size = config.train.micro_batch;
  opts.seed = static_cast<uint64_t>(config.train.seed);
  opts.device = device;
  opts.rank = launch.rank;
  opts.world_size = launch.world_size;
  return opts;
}

TrainResult run_training(const Config& config, TrainTask& task, DataLoader& loader, const std::string& resume,
                         const Runtime& rt) {
  if (rt.is_main()) save_config(config, (std::filesystem::path(config.train.output_dir) / "config.yaml").string());
  TrainResult result = train(config, task, loader, TrainOptions{resume, to_yaml(config), rt.comm_ptr()});
  if (result.status == TrainResult::Status::kInterrupted && result.checkpoint.empty())
    spdlog::info("stopped before the first step: nothing to save (run the same command again to start)");
  else if (result.status == TrainResult::Status::kInterrupted)
    spdlog::info("stopped at step {}/{}; continue with --resume auto (checkpoint {})", result.step, result.total_steps,
                 result.checkpoint);
  else
    spdlog::info("done: {} steps; run directory {}", result.step, config.train.output_dir);
  return result;
}

int guarded_main(const std::function<int()>& body) {
  auto failed = [](int code, const std::string& what) {
    spdlog::error("{}", what);
    if (g_comm) g_comm->report_failure(what);
    return code;
  };
  int code = 0;
  try {
    code = body();
  } catch (const ConfigError& e) {
    std::cerr << e.what() << "\n";
    if (g_comm) g_comm->report_failure(e.what());
    code = 2;
  } catch (const dist::PeerFailure& e) {
    // Another rank's failure, seen from here: the others know already (PeerFailure is thrown after telling them),
    // and a report from this rank would name it as a cause.
    spdlog::error("{}", e.what());
    code = 1;
  } catch (const TrainingDiverged& e) {
    code = failed(3, std::string("diverged: ") + e.what());
  } catch (const c10::Error& e) {
    code = failed(1, e.what_without_backtrace());
  } catch (const std::exception& e) {
    code = failed(1, e.what());
  }
  g_comm.reset();
  return code;
}

}  // namespace nepa
