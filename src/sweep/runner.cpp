// Local execution of a sweep: child processes of the apps, each in its own process group (a terminal's Ctrl-C
// reaches nepa_sweep only, which forwards exactly one SIGTERM: a second signal would kill the app before its
// checkpoint), and with a parent-death signal, so that a killed nepa_sweep leaves no stage running that a
// rerun would then start a second time.
#include "nepa/sweep/runner.h"
#include "nepa/sweep/share.h"

#include <arpa/inet.h>
#include <sched.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fmt/chrono.h>
#include <fmt/format.h>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>

#include <chrono>
#include <csignal>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <thread>

#include "nepa/io/atomic_file.h"

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;

namespace nepa::sweep {
namespace {

volatile std::sig_atomic_t g_signal = 0;
volatile std::sig_atomic_t g_signal_count = 0;

void on_signal(int sig) {
  g_signal = sig;
  g_signal_count = g_signal_count + 1;
}

enum class State { kPending, kRunning, kDone, kSkipped, kFailed, kBlocked, kStopped };

std::string now_iso() {
  std::time_t t = std::time(nullptr);
  std::tm tm{};
  localtime_r(&t, &tm);
  return fmt::format("{:%Y-%m-%dT%H:%M:%S}", tm);
}

std::string label(const Run& run, const StageRun& s) {
  return run.point + "/seed" + std::to_string(run.seed) + "/" + s.stage;
}

// A port the kernel has just handed out and released: the ranks of a local multi-process stage meet there.
int free_port() {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw std::runtime_error(std::string("socket: ") + std::strerror(errno));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    close(fd);
    throw std::runtime_error(std::string("cannot find a free port: ") + std::strerror(errno));
  }
  close(fd);
  return ntohs(addr.sin_port);
}

pid_t spawn(const std::vector<std::string>& argv, const std::vector<std::pair<std::string, std::string>>& env,
            int log_fd, const std::vector<int>& cpus) {
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid > 0) return pid;
  setpgid(0, 0);
  prctl(PR_SET_PDEATHSIG, SIGTERM);
  if (getppid() != parent) _exit(1);  // the parent died before prctl took effect
  dup2(log_fd, STDOUT_FILENO);
  dup2(log_fd, STDERR_FILENO);
  if (int null = open("/dev/null", O_RDONLY); null >= 0) dup2(null, STDIN_FILENO);
  for (const auto& [k, v] : env) setenv(k.c_str(), v.c_str(), 1);
  if (!cpus.empty()) {
    cpu_set_t set;
    CPU_ZERO(&set);
    for (int c : cpus) CPU_SET(c, &set);
    if (sched_setaffinity(0, sizeof(set), &set) != 0) {
      dprintf(STDERR_FILENO, "nepa_sweep: cannot bind %s to its cores: %s\n", args[0], std::strerror(errno));
      _exit(126);
    }
  }
  execv(args[0], args.data());
  dprintf(STDERR_FILENO, "nepa_sweep: cannot start %s: %s\n", args[0], std::strerror(errno));
  _exit(127);
}

std::string describe_status(int status) {
  if (WIFEXITED(status)) return fmt::format("exit code {}", WEXITSTATUS(status));
  if (WIFSIGNALED(status))
    return fmt::format("killed by signal {} ({})", WTERMSIG(status), strsignal(WTERMSIG(status)));
  return "ended abnormally";
}

// The cores of each of `jobs` slots: this process's cores cut into `jobs` contiguous shares, or nothing (no
// binding) when there are fewer cores than slots. Bound to its share, an app sizes its thread pool to it
// (train.threads 0 follows the affinity mask): two single-process stages side by side on 2 cores then run one
// thread each instead of fighting with two each (OpenMP oversubscription).
std::vector<std::vector<int>> slot_cores(int jobs) {
  cpu_set_t set;
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof(set), &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  std::vector<std::vector<int>> slots(static_cast<size_t>(jobs));
  if (jobs <= 1 || static_cast<int>(cpus.size()) < jobs) return slots;
  for (size_t i = 0; i < cpus.size(); ++i) slots[i * static_cast<size_t>(jobs) / cpus.size()].push_back(cpus[i]);
  return slots;
}

struct Active {
  int run = 0, stage = 0, slots = 1;
  std::vector<int> slot_ids;  // the slots it holds (their cores)
  std::vector<pid_t> pids;
  std::vector<int> status;  // -1 while running
  Clock::time_point start;
  bool ranks_stopped = false;
};

class LocalRunner {
 public:
  LocalRunner(const Sweep& sweep, int jobs)
      : sweep_(sweep), jobs_(std::max(1, jobs)), slot_cores_(slot_cores(jobs_)), slot_busy_(jobs_, false) {
    if (jobs_ > 1 && slot_cores_.front().empty())
      spdlog::warn("--jobs {} is more than this process's cores: stages are not bound to cores", jobs_);
    for (const auto& r : sweep.runs) {
      std::vector<State> states;
      for (const auto& s : r.stages) states.push_back(stage_done(s) ? State::kSkipped : State::kPending);
      states_.push_back(std::move(states));
    }
  }

  int run() {
    int skipped = count(State::kSkipped);
    if (skipped) spdlog::info("{} stage run(s) finished before: skipped", skipped);
    int forwarded = 0;
    while (true) {
      if (g_signal_count > forwarded) {
        forwarded = g_signal_count;
        spdlog::warn("{}: stopping the running stages (they checkpoint; rerun the same command to continue)",
                     strsignal(g_signal));
        for (auto& a : active_)
          for (size_t i = 0; i < a.pids.size(); ++i)
            if (a.status[i] < 0) kill(a.pids[i], SIGTERM);
      }
      reap();
      if (!g_signal) {
        block_downstream();
        start_ready();
      }
      if (active_.empty()) break;
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
    return summarize();
  }

 private:
  int count(State s) const {
    int n = 0;
    for (const auto& r : states_)
      for (State x : r) n += x == s;
    return n;
  }

  void block_downstream() {
    for (size_t r = 0; r < sweep_.runs.size(); ++r)
      for (size_t s = 0; s < states_[r].size(); ++s) {
        const int up = sweep_.runs[r].stages[s].upstream;
        if (states_[r][s] != State::kPending || up < 0) continue;
        const State u = states_[r][up];
        if (u == State::kFailed || u == State::kBlocked || u == State::kStopped) states_[r][s] = State::kBlocked;
      }
  }

  int busy_slots() const {
    int n = 0;
    for (const auto& a : active_) n += a.slots;
    return n;
  }

  // Runs first, then stages: a point's chain finishes before the next point's starts, so results come early.
  void start_ready() {
    for (size_t r = 0; r < sweep_.runs.size(); ++r)
      for (size_t s = 0; s < states_[r].size(); ++s) {
        const StageRun& st = sweep_.runs[r].stages[s];
        if (states_[r][s] != State::kPending) continue;
        if (st.upstream >= 0 && states_[r][st.upstream] != State::kDone && states_[r][st.upstream] != State::kSkipped)
          continue;
        const int slots = std::min(st.processes, jobs_);
        if (busy_slots() + slots > jobs_) return;
        start(static_cast<int>(r), static_cast<int>(s), slots);
      }
  }

  void start(int r, int s, int slots) {
    const Run& run = sweep_.runs[r];
    const StageRun& st = run.stages[s];
    fs::create_directories(st.dir);
    write_text_atomic((fs::path(st.dir) / kAttemptStamp).string(), command_stamp(st.command));
    const std::string log_path = (fs::path(st.dir) / kStageLog).string();
    const int log_fd = open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (log_fd < 0) throw std::runtime_error(log_path + ": cannot open: " + std::strerror(errno));
    const std::string header = fmt::format("==== nepa_sweep {}: {}{}\n", now_iso(), shell_command(st.command),
                                           st.processes > 1 ? fmt::format(" ({} processes)", st.processes) : "");
    if (write(log_fd, header.data(), header.size()) < 0) spdlog::warn("{}: {}", log_path, std::strerror(errno));
    Active a;
    a.run = r;
    a.stage = s;
    a.slots = slots;
    for (int j = 0; j < jobs_ && static_cast<int>(a.slot_ids.size()) < slots; ++j)
      if (!slot_busy_[j]) {
        slot_busy_[j] = true;
        a.slot_ids.push_back(j);
      }
    a.start = Clock::now();
    // The variables scripts/launch_local.sh sets, as torchrun would.
    const int port = st.processes > 1 ? free_port() : 0;
    for (int rank = 0; rank < st.processes; ++rank) {
      std::vector<std::pair<std::string, std::string>> env;
      if (st.processes > 1)
        env = {{"RANK", std::to_string(rank)},       {"WORLD_SIZE", std::to_string(st.processes)},
               {"LOCAL_RANK", std::to_string(rank)}, {"LOCAL_WORLD_SIZE", std::to_string(st.processes)},
               {"MASTER_ADDR", "127.0.0.1"},         {"MASTER_PORT", std::to_string(port)}};
      // Rank k on slot k (mod the slots it got): a P-process stage on P slots puts one rank on each share.
      const int slot = a.slot_ids[static_cast<size_t>(rank) % a.slot_ids.size()];
      a.pids.push_back(spawn(st.command, env, log_fd, slot_cores_[slot]));
      a.status.push_back(-1);
    }
    close(log_fd);
    states_[r][s] = State::kRunning;
    spdlog::info("start {}{}: log {}", label(run, st),
                 st.processes > 1 ? fmt::format(" ({} processes)", st.processes) : "", log_path);
    active_.push_back(std::move(a));
  }

  void reap() {
    for (size_t i = 0; i < active_.size();) {
      Active& a = active_[i];
      bool running = false;
      for (size_t k = 0; k < a.pids.size(); ++k) {
        if (a.status[k] >= 0) continue;
        int st = 0;
        const pid_t got = waitpid(a.pids[k], &st, WNOHANG);
        if (got == a.pids[k]) a.status[k] = st;
        else running = true;
      }
      // As launch_local.sh: one failed rank would leave the others waiting for dist.timeout_s.
      bool failed = false;
      for (int st : a.status) failed = failed || (st >= 0 && st != 0);
      if (failed && running && !a.ranks_stopped) {
        a.ranks_stopped = true;
        for (size_t k = 0; k < a.pids.size(); ++k)
          if (a.status[k] < 0) kill(a.pids[k], SIGTERM);
      }
      if (running) {
        ++i;
        continue;
      }
      finish(a);
      for (int j : a.slot_ids) slot_busy_[j] = false;
      active_.erase(active_.begin() + static_cast<long>(i));
    }
  }

  // Finished means: every rank exited 0 and the app wrote its final export during this attempt. Exit 0 alone
  // is not enough: an app stopped by a signal checkpoints and exits 0 too.
  void finish(const Active& a) {
    const Run& run = sweep_.runs[a.run];
    const StageRun& st = run.stages[a.stage];
    const double wall = std::chrono::duration<double>(Clock::now() - a.start).count();
    int first_bad = 0;
    for (int s : a.status)
      if (s != 0 && first_bad == 0) first_bad = s;
    std::string outcome;
    const fs::path export_file = fs::path(st.dir) / "final" / "model.safetensors";
    std::error_code ec;
    const auto stamp = fs::last_write_time(fs::path(st.dir) / kAttemptStamp, ec);
    const bool exported = fs::exists(export_file, ec) && fs::last_write_time(export_file, ec) > stamp;
    if (first_bad == 0 && exported) {
      outcome = "finished";
      states_[a.run][a.stage] = State::kDone;
      nlohmann::json done = {{"point", run.point},       {"seed", run.seed}, {"stage", st.stage},
                             {"finished", now_iso()},     {"wall_s", wall},   {"command", st.command},
                             {"processes", st.processes}};
      write_text_atomic((fs::path(st.dir) / kDoneMarker).string(), done.dump(1) + "\n");
      register_stage(sweep_, st);  // other sweeps with a stage of the same identity reuse it
      spdlog::info("done  {} ({:.0f} s)", label(run, st), wall);
    } else if (first_bad == 0 || g_signal) {
      outcome = "stopped";
      states_[a.run][a.stage] = State::kStopped;
      reasons_[&st] = first_bad == 0 ? "stopped before its final export (a signal? it resumes from its checkpoint)"
                                      : describe_status(first_bad);
      spdlog::warn("stopped {} after {:.0f} s: {}", label(run, st), wall, reasons_[&st]);
    } else {
      outcome = "failed";
      states_[a.run][a.stage] = State::kFailed;
      reasons_[&st] = describe_status(first_bad);
      spdlog::error("FAILED {}: {} (log {})", label(run, st), reasons_[&st], (fs::path(st.dir) / kStageLog).string());
    }
    const nlohmann::json attempt = {{"ended", now_iso()},
                                    {"wall_s", wall},
                                    {"outcome", outcome},
                                    {"status", first_bad == 0 ? "exit code 0" : describe_status(first_bad)}};
    std::ofstream((fs::path(st.dir) / kAttempts), std::ios::app) << attempt.dump() << "\n";
  }

  int summarize() const {
    int total = 0;
    for (const auto& r : states_) total += static_cast<int>(r.size());
    spdlog::info("sweep {}: {} stage runs: {} finished now, {} finished before, {} failed, {} blocked, {} stopped, {} "
                 "not started; {}",
                 sweep_.spec.name, total, count(State::kDone), count(State::kSkipped), count(State::kFailed),
                 count(State::kBlocked), count(State::kStopped), count(State::kPending), sweep_.dir);
    for (size_t r = 0; r < sweep_.runs.size(); ++r)
      for (size_t s = 0; s < states_[r].size(); ++s) {
        const Run& run = sweep_.runs[r];
        const StageRun& st = run.stages[s];
        if (states_[r][s] == State::kFailed)
          spdlog::error("  failed:  {}: {} (log {})", label(run, st), reasons_.at(&st),
                        (fs::path(st.dir) / kStageLog).string());
        if (states_[r][s] == State::kBlocked)
          spdlog::error("  blocked: {} (its upstream stage {} did not finish)", label(run, st),
                        run.stages[st.upstream].stage);
      }
    if (g_signal) return 128 + g_signal;
    return count(State::kDone) + count(State::kSkipped) == total ? 0 : 1;
  }

  const Sweep& sweep_;
  const int jobs_;
  const std::vector<std::vector<int>> slot_cores_;
  std::vector<bool> slot_busy_;
  std::vector<std::vector<State>> states_;
  std::vector<Active> active_;
  std::map<const StageRun*, std::string> reasons_;
};

// One nepa_sweep per sweep directory: two would start the same stage twice in one run directory.
int lock_sweep_dir(const std::string& dir) {
  fs::create_directories(dir);
  const std::string path = (fs::path(dir) / ".nepa_sweep.lock").string();
  const int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
  if (flock(fd, LOCK_EX | LOCK_NB) != 0)
    throw std::runtime_error("another nepa_sweep is running on " + dir + " (" + path + " is locked)");
  return fd;
}

}  // namespace

void print_plan(const Sweep& sweep, std::ostream& out) {
  size_t n = 0, done = 0;
  for (const auto& run : sweep.runs)
    for (const auto& s : run.stages) {
      ++n;
      const bool finished = stage_done(s);
      done += finished;
      out << "# " << label(run, s) << (finished ? "  [finished: skipped]" : "") << "\n";
      if (s.processes > 1)
        out << "#   " << s.processes << " processes: RANK=0.." << s.processes - 1 << " WORLD_SIZE=" << s.processes
            << " LOCAL_RANK=RANK LOCAL_WORLD_SIZE=" << s.processes << " MASTER_ADDR=127.0.0.1 MASTER_PORT=<free>\n";
      out << shell_command(s.command) << "\n";
    }
  out << "# " << sweep.runs.size() << " runs (" << sweep.spec.points.size() << " points x " << sweep.spec.seeds.size()
      << " seeds), " << n << " stage runs, " << done << " finished; sweep directory " << sweep.dir << "\n";
}

int run_local(const Sweep& sweep, int jobs) {
  const int lock = lock_sweep_dir(sweep.dir);
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);
  LocalRunner runner(sweep, jobs);
  const int code = runner.run();
  close(lock);
  return code;
}

}  // namespace nepa::sweep
