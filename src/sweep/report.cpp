#include "nepa/sweep/report.h"

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>

#include "nepa/io/atomic_file.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace nepa::sweep {
namespace {

// Percentages with two decimals; small figures (a loss, pred_std) with four significant digits. A standard
// deviation takes its mean's format, so the two line up.
std::string number(double v, double scale) {
  if (!std::isfinite(v)) return "nan";
  return std::fabs(scale) >= 1.0 ? fmt::format("{:.2f}", v) : fmt::format("{:.4g}", v);
}
std::string number(double v) { return number(v, v); }

std::string csv_field(const std::string& s) {
  if (s.find_first_of(",\"\n") == std::string::npos) return s;
  std::string out = "\"";
  for (char c : s) out += c == '"' ? std::string("\"\"") : std::string(1, c);
  return out + "\"";
}

std::optional<double> total_wall_s(const fs::path& attempts) {
  std::ifstream in(attempts);
  if (!in) return std::nullopt;
  double total = 0;
  bool any = false;
  for (std::string line; std::getline(in, line);) {
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (j.is_object() && j.contains("wall_s") && j["wall_s"].is_number()) {
      total += j["wall_s"].get<double>();
      any = true;
    }
  }
  return any ? std::optional<double>(total) : std::nullopt;
}

// Our figures per metric and point, over the runs that have them.
std::map<std::string, std::map<std::string, std::vector<double>>> values_by_point(const Sweep& sweep,
                                                                                  const std::vector<RunResult>& rows) {
  std::map<std::string, std::map<std::string, std::vector<double>>> out;
  for (const auto& r : rows)
    for (const auto& m : sweep.spec.metrics)
      if (auto v = r.metrics.at(m.name)) out[m.name][r.point].push_back(*v);
  return out;
}

std::string results_md(const Sweep& sweep, const std::vector<RunResult>& rows) {
  const SweepSpec& spec = sweep.spec;
  int stage_runs = 0, finished = 0;
  for (const auto& r : rows) {
    stage_runs += static_cast<int>(spec.stages.size());
    finished += static_cast<int>(spec.stages.size() - r.unfinished.size());
  }
  std::string seeds;
  for (long long s : spec.seeds) seeds += (seeds.empty() ? "" : ", ") + std::to_string(s);
  std::string md = fmt::format(
      "# Sweep {}\n\n{} runs: {} points x {} seeds ({}); {} of {} stage runs finished. Sweep file: `{}`.\n\n"
      "Ours: mean ± std over seeds (sample standard deviation, n - 1), n = the finished runs that report the metric.\n"
      "**Paper**: the paper's ImageNet figure{}, for orientation only: it is never part of our statistics.\n",
      spec.name, rows.size(), spec.points.size(), spec.seeds.size(), seeds, finished, stage_runs, spec.file,
      spec.paper_note.empty() ? "" : " (" + spec.paper_note + ")");
  const auto values = values_by_point(sweep, rows);
  for (const auto& m : spec.metrics) {
    bool any_paper = false;
    for (const auto& p : spec.points) any_paper = any_paper || p.paper.count(m.name);
    md += fmt::format("\n## {}\n\n`{}` stage, metrics.jsonl records of kind `{}`, key `{}` ({}).\n\n", m.label,
                      m.stage, m.kind, m.key, m.mode == "last" ? "the last record" : m.mode + " over the records");
    md += any_paper ? "| point | ours: mean ± std | n | per seed | paper (ImageNet) |\n|---|---|---|---|---|\n"
                    : "| point | ours: mean ± std | n | per seed |\n|---|---|---|---|\n";
    for (const auto& p : spec.points) {
      std::vector<double> v;
      if (auto it = values.find(m.name); it != values.end())
        if (auto jt = it->second.find(p.name); jt != it->second.end()) v = jt->second;
      const Stats s = summarize(v);
      std::string ours = s.n == 0   ? "—"
                         : s.n == 1 ? number(s.mean) + " (one seed)"
                                    : number(s.mean) + " ± " + number(s.std, s.mean);
      std::string each;
      for (double x : v) each += (each.empty() ? "" : ", ") + number(x);
      md += fmt::format("| {} | {} | {} | {} |", p.name, ours, s.n, each.empty() ? "—" : each);
      if (any_paper) md += p.paper.count(m.name) ? " " + number(p.paper.at(m.name)) + " |" : " — |";
      md += "\n";
    }
  }
  md += "\n## Wall time per stage (minutes, mean over the runs, all attempts of a run together)\n\n| point |";
  for (const auto& st : spec.stages) md += " " + st.name + " |";
  md += "\n|---|";
  for (size_t i = 0; i < spec.stages.size(); ++i) md += "---|";
  md += "\n";
  for (const auto& p : spec.points) {
    md += "| " + p.name + " |";
    for (size_t i = 0; i < spec.stages.size(); ++i) {
      std::vector<double> w;
      for (const auto& r : rows)
        if (r.point == p.name && r.wall_s[i]) w.push_back(*r.wall_s[i] / 60.0);
      md += w.empty() ? " — |" : fmt::format(" {:.1f} |", summarize(w).mean);
    }
    md += "\n";
  }
  return md;
}

}  // namespace

Stats summarize(const std::vector<double>& values) {
  Stats s;
  s.n = static_cast<int>(values.size());
  if (s.n == 0) {
    s.mean = s.std = std::numeric_limits<double>::quiet_NaN();
    return s;
  }
  double sum = 0;
  for (double v : values) sum += v;
  s.mean = sum / s.n;
  double sq = 0;
  for (double v : values) sq += (v - s.mean) * (v - s.mean);
  s.std = s.n < 2 ? std::numeric_limits<double>::quiet_NaN() : std::sqrt(sq / (s.n - 1));
  return s;
}

std::optional<double> extract_metric(const std::string& metrics_jsonl, const MetricSpec& metric) {
  std::ifstream in(metrics_jsonl);
  if (!in) return std::nullopt;
  std::optional<double> out;
  for (std::string line; std::getline(in, line);) {
    // A line cut short by a kill is not JSON: skipped, as the trainer drops it on resume.
    const json j = json::parse(line, nullptr, /*allow_exceptions=*/false);
    if (!j.is_object() || j.value("kind", "") != metric.kind || !j.contains(metric.key) || !j[metric.key].is_number())
      continue;
    const double v = j[metric.key].get<double>();
    if (!out || metric.mode == "last" || (metric.mode == "max" && v > *out) || (metric.mode == "min" && v < *out))
      out = v;
  }
  return out;
}

std::vector<RunResult> collect_results(const Sweep& sweep) {
  std::vector<RunResult> rows;
  for (const auto& run : sweep.runs) {
    RunResult r;
    r.point = run.point;
    r.seed = run.seed;
    for (const auto& s : run.stages) {
      r.wall_s.push_back(total_wall_s(fs::path(s.dir) / kAttempts));
      if (!stage_done(s)) r.unfinished.push_back(s.stage);
    }
    for (const auto& m : sweep.spec.metrics) {
      r.metrics[m.name] = std::nullopt;
      for (const auto& s : run.stages)
        if (s.stage == m.stage && stage_done(s))
          r.metrics[m.name] = extract_metric((fs::path(s.dir) / "metrics.jsonl").string(), m);
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

std::vector<std::string> write_report(const Sweep& sweep) {
  const SweepSpec& spec = sweep.spec;
  const std::vector<RunResult> rows = collect_results(sweep);
  const fs::path dir = sweep.dir;

  std::string csv = "point,seed";
  for (const auto& m : spec.metrics) csv += "," + csv_field(m.name);
  for (const auto& st : spec.stages) csv += "," + csv_field(st.name + "_wall_s");
  csv += ",status\n";
  for (const auto& r : rows) {
    csv += csv_field(r.point) + "," + std::to_string(r.seed);
    for (const auto& m : spec.metrics) {
      const auto& v = r.metrics.at(m.name);
      csv += "," + (v ? fmt::format("{}", *v) : std::string());
    }
    for (const auto& w : r.wall_s) csv += "," + (w ? fmt::format("{:.1f}", *w) : std::string());
    std::string status = "finished";
    if (!r.unfinished.empty()) {
      status = "unfinished:";
      for (const auto& s : r.unfinished) status += " " + s;
    }
    csv += "," + csv_field(status) + "\n";
  }

  json summary = {{"name", spec.name}, {"paper_note", spec.paper_note}, {"metrics", json::array()}};
  const auto values = values_by_point(sweep, rows);
  for (const auto& m : spec.metrics) {
    json points = json::array();
    for (const auto& p : spec.points) {
      std::vector<double> v;
      if (auto it = values.find(m.name); it != values.end())
        if (auto jt = it->second.find(p.name); jt != it->second.end()) v = jt->second;
      const Stats s = summarize(v);
      json e = {{"point", p.name}, {"n", s.n}, {"values", v}};
      e["mean"] = s.n ? json(s.mean) : json(nullptr);
      e["std"] = s.n > 1 ? json(s.std) : json(nullptr);
      e["paper"] = p.paper.count(m.name) ? json(p.paper.at(m.name)) : json(nullptr);
      points.push_back(e);
    }
    summary["metrics"].push_back({{"name", m.name}, {"label", m.label}, {"points", points}});
  }

  const std::vector<std::string> files = {(dir / "results.csv").string(), (dir / "results.md").string(),
                                          (dir / "summary.json").string()};
  write_text_atomic(files[0], csv);
  write_text_atomic(files[1], results_md(sweep, rows));
  write_text_atomic(files[2], summary.dump(1) + "\n");
  return files;
}

}  // namespace nepa::sweep
