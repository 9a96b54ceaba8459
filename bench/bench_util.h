// What the benchmarks share: timing helpers, the fp32 GEMM peak that MFU is measured against, and the Python side
// of a benchmark as a child process speaking one JSON line per request (`<script>.py serve`).
#pragma once

#include <fmt/format.h>
#include <spawn.h>
#include <sys/wait.h>
#include <torch/torch.h>
#include <unistd.h>
#include <yaml-cpp/yaml.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <stdexcept>
#include <string>
#include <vector>

namespace nepa::bench {

using Clock = std::chrono::steady_clock;

inline double secs(Clock::time_point a, Clock::time_point b) { return std::chrono::duration<double>(b - a).count(); }

inline double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? std::nan("") : v[v.size() / 2];
}

struct GemmPeak {
  double best = 0;                          // GFLOP/s, best shape
  std::map<std::string, double> per_shape;  // GFLOP/s by "MxKxN"
};

// Best of `reps` fp32 mm_out per shape (after two untimed ones), 2 FLOPs per multiply-add.
// On a GPU each product is timed from a synchronised start to a synchronised end.
inline GemmPeak gemm_peak(const std::vector<std::array<int64_t, 3>>& shapes, int reps,
                          const torch::TensorOptions& options = {}) {
  torch::NoGradGuard no_grad;
  GemmPeak out;
  const bool cuda = options.device().is_cuda();
  auto sync = [&] {
    if (cuda) torch::cuda::synchronize();
  };
  for (const auto& s : shapes) {
    auto a = torch::randn({s[0], s[1]}, options), b = torch::randn({s[1], s[2]}, options),
         c = torch::empty({s[0], s[2]}, options);
    for (int i = 0; i < 2; ++i) torch::mm_out(c, a, b);
    double best = 1e30;
    for (int i = 0; i < reps; ++i) {
      sync();
      auto t0 = Clock::now();
      torch::mm_out(c, a, b);
      sync();
      best = std::min(best, secs(t0, Clock::now()));
    }
    const double gflops = 2.0 * s[0] * s[1] * s[2] / best / 1e9;
    out.per_shape[fmt::format("{}x{}x{}", s[0], s[1], s[2])] = gflops;
    out.best = std::max(out.best, gflops);
  }
  return out;
}

// The benchmark's Python side: started with `argv` (plus `extra_env` entries "NAME=value"), its first JSON line
// is header(); call() sends one line and returns the JSON line it answers. Lines that are not JSON are the
// child's own messages and are printed. Spawned, not forked by hand, because this process already runs OpenMP
// threads.
class JsonChild {
 public:
  explicit JsonChild(const std::vector<std::string>& argv, const std::vector<std::string>& extra_env = {}) {
    int to_child[2], from_child[2];
    if (pipe(to_child) != 0 || pipe(from_child) != 0) throw std::runtime_error("pipe failed");
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, to_child[0], STDIN_FILENO);
    posix_spawn_file_actions_adddup2(&fa, from_child[1], STDOUT_FILENO);
    for (int fd : {to_child[0], to_child[1], from_child[0], from_child[1]}) posix_spawn_file_actions_addclose(&fa, fd);
    std::vector<char*> args, env;
    for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
    args.push_back(nullptr);
    for (char** e = environ; *e; ++e) env.push_back(*e);
    for (const auto& e : extra_env) env.push_back(const_cast<char*>(e.c_str()));
    env.push_back(nullptr);
    const int err = posix_spawnp(&pid_, args[0], &fa, nullptr, args.data(), env.data());
    posix_spawn_file_actions_destroy(&fa);
    close(to_child[0]);
    close(from_child[1]);
    if (err != 0) {
      close(to_child[1]);
      close(from_child[0]);
      pid_ = -1;
      throw std::runtime_error(fmt::format("cannot start {}: {}", argv[0], std::strerror(err)));
    }
    to_ = fdopen(to_child[1], "w");
    from_ = fdopen(from_child[0], "r");
    try {
      header_ = read_json();
    } catch (...) {
      finish();
      throw;
    }
  }
  ~JsonChild() { finish(); }
  JsonChild(const JsonChild&) = delete;
  JsonChild& operator=(const JsonChild&) = delete;

  const YAML::Node& header() const { return header_; }

  YAML::Node call(const std::string& command) {
    fputs((command + "\n").c_str(), to_);
    fflush(to_);
    return read_json();
  }

 private:
  void finish() {
    if (to_) fclose(to_);  // EOF on its stdin ends the serve loop
    if (from_) fclose(from_);
    if (pid_ > 0) waitpid(pid_, nullptr, 0);
    to_ = from_ = nullptr;
    pid_ = -1;
  }

  YAML::Node read_json() {
    std::string line;
    char buf[1 << 16];
    while (fgets(buf, sizeof(buf), from_)) {
      line += buf;
      if (line.back() != '\n') continue;
      if (line[0] == '{') return YAML::Load(line);
      fmt::print("{}", line);
      line.clear();
    }
    throw std::runtime_error("the Python side exited early (see its messages above)");
  }

  pid_t pid_ = -1;
  FILE* to_ = nullptr;
  FILE* from_ = nullptr;
  YAML::Node header_;
};

// $NEPA_PYTHON, else the venv scripts/setup.sh makes.
inline std::string default_python() {
  if (const char* p = std::getenv("NEPA_PYTHON"); p && *p) return p;
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/nepa/venv/bin/python";
}

}  // namespace nepa::bench
