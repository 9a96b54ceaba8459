// nepa_sweep: one sweep file -> all its runs, locally or on SLURM, and the results table and plots.
//   nepa_sweep run configs/sweeps/causal_vs_bidir_fmnist.yaml [--jobs N] [--out DIR]   (again to continue)
//   nepa_sweep --dry-run FILE                    every run and command line, nothing started
//   nepa_sweep slurm FILE [--out DIR]            DIR/slurm/: job arrays per stage + submit.sh
//   nepa_sweep report DIR                        results.csv, results.md, PNG plots (scripts/plot_sweep.py)
// Exit codes: 0 done, 1 a stage failed / plots failed / other errors, 2 bad sweep file or command line,
// 128 + signal when stopped by one. docs/sweeps.md has the file format.
#include <spdlog/spdlog.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <iostream>

#include "app_cli.h"
#include "nepa/config/config.h"
#include "nepa/sweep/report.h"
#include "nepa/sweep/runner.h"
#include "nepa/sweep/share.h"
#include "nepa/sweep/slurm.h"
#include "nepa/sweep/sweep.h"

namespace fs = std::filesystem;
using namespace nepa::sweep;

namespace {

struct Options {
  std::string file, out, bin, python, plot_script = NEPA_SOURCE_DIR "/scripts/plot_sweep.py";
  int jobs = 1;
  bool dry_run = false, no_plots = false;
};

// The apps are the ones built beside this executable, unless --bin says otherwise.
Sweep load_and_expand(const Options& o) {
  SweepSpec spec = load_sweep(o.file);
  const fs::path bin = o.bin.empty() ? fs::read_symlink("/proc/self/exe").parent_path() : fs::path(o.bin);
  for (const auto& s : spec.stages)
    if (!fs::exists(bin / s.app))
      throw SweepError("sweep error: " + (bin / s.app).string() + " not found (build it, or give --bin DIR)");
  Sweep sweep = expand(spec, o.out.empty() ? "runs/sweeps/" + spec.name : o.out, fs::absolute(bin).string());
  check_configs(sweep);
  check_finished_stages(sweep);
  return sweep;
}

// --python, $NEPA_PYTHON, then the venv scripts/setup.sh makes ($NEPA_VENV or ~/.cache/nepa/venv).
std::string plot_python(const Options& o) {
  if (!o.python.empty()) return o.python;
  if (const char* p = std::getenv("NEPA_PYTHON"); p && *p) return p;
  if (const char* v = std::getenv("NEPA_VENV"); v && *v) return std::string(v) + "/bin/python";
  const char* home = std::getenv("HOME");
  return std::string(home ? home : "") + "/.cache/nepa/venv/bin/python";
}

int report(const Options& o) {
  const Sweep sweep = read_sweep_json(o.file);
  for (const auto& f : write_report(sweep)) spdlog::info("wrote {}", f);
  if (o.no_plots) return 0;
  const std::string python = plot_python(o);
  if (access(python.c_str(), X_OK) != 0) {
    std::cerr << "nepa_sweep report: no Python at " << python << " for the plots (bash scripts/setup.sh makes that "
              << "venv with matplotlib; --python PY or NEPA_PYTHON chooses another; --no-plots skips them)\n";
    return 1;
  }
  const int rc = std::system(shell_command({python, o.plot_script, sweep.dir}).c_str());
  if (rc != 0) {
    std::cerr << "nepa_sweep report: the plots failed (" << python << " " << o.plot_script << " exited "
              << (WIFEXITED(rc) ? WEXITSTATUS(rc) : rc) << "); the tables are written\n";
    return 1;
  }
  return 0;
}

int run(CLI::App& app, const Options& o) {
  if (app.got_subcommand("report")) return report(o);
  const Sweep sweep = load_and_expand(o);
  if (app.got_subcommand("slurm")) {
    write_sweep_json(sweep);
    for (const auto& f : write_slurm(sweep, (fs::path(sweep.dir) / "slurm").string())) spdlog::info("wrote {}", f);
    spdlog::info("{} runs x {} stages; submit with: bash {}/slurm/submit.sh [sbatch options]", sweep.runs.size(),
                 sweep.spec.stages.size(), sweep.dir);
    return 0;
  }
  if (o.dry_run) {
    print_plan(sweep, std::cout);
    return 0;
  }
  write_sweep_json(sweep);
  register_finished(sweep);
  if (const int n = link_shared(sweep)) spdlog::info("{} stage run(s) reused from other sweeps", n);
  return run_local(sweep, o.jobs);
}

}  // namespace

int main(int argc, char** argv) {
  // The spelling, `nepa_sweep --dry-run FILE`, is `nepa_sweep run --dry-run FILE`.
  std::vector<char*> args(argv, argv + argc);
  char run_word[] = "run";
  if (argc > 1 && std::string(argv[1]) == "--dry-run") args.insert(args.begin() + 1, run_word);

  CLI::App app{"nepa_sweep: run a sweep file's points x seeds x stages locally or on SLURM, and report them",
               "nepa_sweep"};
  app.require_subcommand(1);
  Options o;
  CLI::App* run_cmd = app.add_subcommand("run", "run what is not finished (again: continue where it stopped)");
  run_cmd->add_option("file", o.file, "sweep file (configs/sweeps/*.yaml)")->required();
  run_cmd->add_option("--jobs", o.jobs, "stage runs at a time (a stage of P processes takes P of them)")
      ->check(CLI::Range(1, 1024));
  run_cmd->add_flag("--dry-run", o.dry_run, "list every run and its command line, start nothing");
  CLI::App* slurm_cmd = app.add_subcommand("slurm", "write <sweep dir>/slurm/: one job array per stage, submit.sh");
  slurm_cmd->add_option("file", o.file, "sweep file")->required();
  for (CLI::App* c : {run_cmd, slurm_cmd}) {
    c->add_option("--out", o.out, "sweep directory (default runs/sweeps/<name>)");
    c->add_option("--bin", o.bin, "folder of the apps (default: beside nepa_sweep)");
  }
  CLI::App* report_cmd = app.add_subcommand("report", "results.csv, results.md and PNG plots of a sweep directory");
  report_cmd->add_option("dir", o.file, "sweep directory (holds sweep.json)")->required();
  report_cmd->add_option("--python", o.python, "Python with matplotlib (default $NEPA_PYTHON, else setup.sh's venv)");
  report_cmd->add_option("--plot-script", o.plot_script, "the plotting script")->capture_default_str();
  report_cmd->add_flag("--no-plots", o.no_plots, "write the tables only");
  if (auto code = nepa::parse_command_line(app, static_cast<int>(args.size()), args.data())) return *code;

  spdlog::set_pattern("[%Y-%m-%d %H:%M:%S] %^%l%$ %v");
  try {
    return run(app, o);
  } catch (const SweepError& e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const nepa::ConfigError& e) {
    std::cerr << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "nepa_sweep: " << e.what() << "\n";
    return 1;
  }
}
