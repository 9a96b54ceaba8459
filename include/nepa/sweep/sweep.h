// Sweep files (docs/sweeps.md): the stages of one experiment point (pretraining, then downstream stages that
// start from its export), the points to compare, the seeds to repeat them with, and the metrics to report.
// A sweep file is expanded into runs (one per point x seed), each a chain of stage runs with a fixed run
// directory and command line; `nepa_sweep run`, `slurm` and `report` all work from that one expansion.
#pragma once

#include <map>
#include <optional>
#include <stdexcept>
#include <string>
#include <vector>

namespace nepa::sweep {

// One line: "sweep error: <file>:<line>: <what>" (or without the line where none applies). Exit code 2.
class SweepError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// `key: value` of a `set:` mapping; the value as the YAML text --set parses (flow style for lists).
struct Override {
  std::string key, value;
  int line = 0;  // 1-based line in the sweep file, for errors the config loader finds later
  std::string arg() const { return key + "=" + value; }
};

struct StageSpec {
  std::string name;
  std::string app;     // nepa_pretrain | nepa_finetune | nepa_seg
  std::string config;  // absolute
  std::vector<Override> set;
  int processes = 1;
  std::string from;  // an earlier stage whose export this one starts from (--init)
  bool from_ema = false;
  std::vector<std::string> sbatch;  // extra #SBATCH options of this stage
  int line = 0;
};

struct PointSpec {
  std::string name;
  std::map<std::string, std::vector<Override>> set;  // stage name, or "all" for every stage
  std::map<std::string, std::string> config;         // stage name -> a config replacing the stage's (absolute)
  std::map<std::string, double> paper;               // metric name -> the paper's figure
  int line = 0;
};

struct MetricSpec {
  std::string name, stage;
  std::string kind = "eval";  // the metrics.jsonl record kind
  std::string key;
  std::string mode = "last";  // last | max | min over the stage's records
  std::string label;          // table heading; defaults to the name
};

struct SweepSpec {
  std::string file;  // absolute path of the sweep file
  std::string name;
  std::string paper_note;  // what the paper's figures are, printed beside them
  std::vector<StageSpec> stages;
  std::vector<PointSpec> points;  // from `points:` or expanded from `grid:`
  std::vector<long long> seeds;
  std::vector<MetricSpec> metrics;
  std::vector<std::string> sbatch;  // extra #SBATCH options of every stage
};

// Strict: unknown or duplicate keys, missing required keys, unknown stage names and bad values are a
// SweepError naming the file and line. Config paths resolve against the sweep file's folder.
SweepSpec load_sweep(const std::string& path);
SweepSpec parse_sweep(const std::string& yaml, const std::string& file, const std::string& base_dir);

struct StageRun {
  std::string stage, app;
  std::string dir;                   // the app's run directory (--output-dir)
  std::vector<std::string> command;  // argv, the same locally and on SLURM
  std::vector<int> override_lines;   // sweep-file line of each --set, in command order (for errors)
  int processes = 1;
  int upstream = -1;  // index of the `from` stage in Run::stages
  std::string identity;  // what decides its result, hashed (check_configs; share.h)
};

struct Run {
  std::string point;
  long long seed = 0;
  std::string dir;  // <sweep dir>/<point>/seed<seed>
  std::vector<StageRun> stages;
};

struct Sweep {
  SweepSpec spec;
  std::string dir;       // absolute
  std::vector<Run> runs;  // point-major, then seed: index = point * seeds + seed (the SLURM array index)
};

// `bin_dir` holds the apps (the folder of nepa_sweep's own executable in practice).
Sweep expand(const SweepSpec& spec, const std::string& sweep_dir, const std::string& bin_dir);

// Loads every stage run's effective config (its config file plus all overrides) as the app will, so that a
// mistyped key in the sweep fails now and not hours later when a downstream stage starts; and sets each stage
// run's identity from it (share.h).
void check_configs(Sweep& sweep);

// <sweep dir>/sweep.json: the expansion, so `report` works on the directory alone.
void write_sweep_json(const Sweep& sweep);
Sweep read_sweep_json(const std::string& sweep_dir);

std::string shell_quote(const std::string& s);
// A small file's whole text; "" when it does not exist (nepa_sweep's own markers and stamps).
std::string read_text(const std::string& path);
std::string shell_command(const std::vector<std::string>& argv);

// The files nepa_sweep keeps in a stage's run directory beside the app's own.
inline constexpr const char* kDoneMarker = "sweep_done.json";       // written after a finished stage
inline constexpr const char* kAttempts = "sweep_attempts.jsonl";    // one line per attempt: wall time, outcome
inline constexpr const char* kStageLog = "stage.log";               // the app's stdout and stderr
// Written when an attempt starts: its mtime says when, its text is the command line, one argument per line.
inline constexpr const char* kAttemptStamp = ".sweep_attempt_start";

bool stage_done(const StageRun& s);
// The stamp's text for `command`.
std::string command_stamp(const std::vector<std::string>& command);
// Refuses (SweepError) a sweep directory whose finished stages no longer match the file: a stage that finished
// with another command line (the sweep file was edited: a budget, an override; the apps' directory alone may
// differ: a rebuild elsewhere runs the same apps) or whose upstream stage is not finished now; a stage linked to
// another sweep's run (share.h) whose identity is no longer this stage's. Skipping those would report old results
// as the new file's.
void check_finished_stages(const Sweep& sweep);

}  // namespace nepa::sweep
