// The results of a sweep from its directory alone (sweep.json and each run's files): one row per run, mean and
// sample standard deviation over seeds per point, and the paper's figures beside ours, never among them.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <vector>

#include "nepa/sweep/sweep.h"

namespace nepa::sweep {

struct Stats {
  double mean = 0.0;
  double std = 0.0;  // sample standard deviation (n - 1); NaN when n < 2
  int n = 0;
};
Stats summarize(const std::vector<double>& values);

// The metric from one metrics.jsonl: among the records of `kind` that hold `key` as a number, the last one's
// value, or the max or min. Nothing when there is no such record (or no file).
std::optional<double> extract_metric(const std::string& metrics_jsonl, const MetricSpec& metric);

struct RunResult {
  std::string point;
  long long seed = 0;
  std::map<std::string, std::optional<double>> metrics;  // only from finished stage runs
  std::vector<std::optional<double>> wall_s;             // per stage: all attempts together
  std::vector<std::string> unfinished;                   // stage names
};
std::vector<RunResult> collect_results(const Sweep& sweep);

// results.csv, results.md and summary.json (what scripts/plot_sweep.py draws) in the sweep directory.
std::vector<std::string> write_report(const Sweep& sweep);

}  // namespace nepa::sweep
