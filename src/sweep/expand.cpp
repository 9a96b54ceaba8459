// From a sweep file to its runs: directories, command lines, and sweep.json, the record `report` reads.
#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "nepa/config/config.h"
#include "nepa/config/fingerprint.h"
#include "nepa/io/atomic_file.h"
#include "nepa/sweep/share.h"
#include "nepa/sweep/sweep.h"

namespace fs = std::filesystem;
using nlohmann::json;

namespace nepa::sweep {

Sweep expand(const SweepSpec& spec, const std::string& sweep_dir, const std::string& bin_dir) {
  Sweep sweep;
  sweep.spec = spec;
  sweep.dir = fs::absolute(sweep_dir).lexically_normal().string();
  for (const auto& point : spec.points) {
    for (long long seed : spec.seeds) {
      Run run;
      run.point = point.name;
      run.seed = seed;
      run.dir = (fs::path(sweep.dir) / point.name / ("seed" + std::to_string(seed))).string();
      for (const auto& stage : spec.stages) {
        StageRun s;
        s.stage = stage.name;
        s.app = stage.app;
        s.processes = stage.processes;
        s.dir = (fs::path(run.dir) / stage.name).string();
        const auto own = point.config.find(stage.name);
        s.command = {(fs::path(bin_dir) / stage.app).lexically_normal().string(), "--config",
                     own != point.config.end() ? own->second : stage.config, "--output-dir", s.dir, "--resume", "auto"};
        // Later overrides win in the config loader: the stage's own, then the point's for all stages, then the
        // point's for this stage, then the seed.
        auto add = [&](const std::vector<Override>& sets) {
          for (const auto& o : sets) {
            s.command.insert(s.command.end(), {"--set", o.arg()});
            s.override_lines.push_back(o.line);
          }
        };
        add(stage.set);
        if (auto it = point.set.find("all"); it != point.set.end()) add(it->second);
        if (auto it = point.set.find(stage.name); it != point.set.end()) add(it->second);
        s.command.insert(s.command.end(), {"--set", "train.seed=" + std::to_string(seed)});
        s.override_lines.push_back(0);
        if (!stage.from.empty()) {
          for (size_t i = 0; i < run.stages.size(); ++i)
            if (run.stages[i].stage == stage.from) s.upstream = static_cast<int>(i);
          const auto& up = run.stages[s.upstream];
          s.command.insert(s.command.end(), {"--init", up.dir + (stage.from_ema ? "/final_ema" : "/final")});
        }
        run.stages.push_back(std::move(s));
      }
      sweep.runs.push_back(std::move(run));
    }
  }
  return sweep;
}

namespace {

// FNV-1a, 64 bits: the same text gives the same identity on every machine and build.
std::string fnv1a_hex(const std::string& text) {
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return fmt::format("{:016x}", h);
}

}  // namespace

void check_configs(Sweep& sweep) {
  for (auto& run : sweep.runs)
    for (auto& s : run.stages) {
      std::vector<std::string> sets;
      std::string config;
      for (size_t i = 1; i + 1 < s.command.size(); ++i) {
        if (s.command[i] == "--config") config = s.command[i + 1];
        if (s.command[i] == "--set") sets.push_back(s.command[i + 1]);
      }
      sets.push_back("train.output_dir=" + s.dir);
      try {
        Config cfg = load_config(config, sets).config;
        bool reported = false;
        for (const auto& m : sweep.spec.metrics) reported = reported || m.stage == s.stage;
        if (reported && !cfg.log.jsonl)
          throw ConfigError("log.jsonl is false, but the sweep reports metrics of this stage from metrics.jsonl");
        // What decides the result: not where it is written, nor how the overrides spelled the config.
        cfg.train.output_dir.clear();
        std::string what = s.app + "\nprocesses " + std::to_string(s.processes) + "\n" + config_fingerprint(cfg);
        if (s.upstream >= 0)
          what += "\nfrom " + run.stages[s.upstream].identity + " " + fs::path(s.command.back()).filename().string();
        s.identity = fnv1a_hex(what);
      } catch (const ConfigError& e) {
        // The line of the override the message names, if it is one of ours.
        int line = 0;
        for (size_t i = 0, k = 0; i + 1 < s.command.size(); ++i)
          if (s.command[i] == "--set") {
            if (k < s.override_lines.size() &&
                std::string(e.what()).find("--set " + s.command[i + 1]) != std::string::npos)
              line = s.override_lines[k];
            ++k;
          }
        throw SweepError("sweep error: " + sweep.spec.file + (line ? ":" + std::to_string(line) : "") + ": point " +
                         run.point + ", stage " + s.stage + ": " + e.what());
      }
    }
}

std::string read_text(const std::string& path) {
  std::ifstream in(path);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string shell_quote(const std::string& s) {
  if (!s.empty() && s.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_./=+:,@%-") ==
                        std::string::npos)
    return s;
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

std::string shell_command(const std::vector<std::string>& argv) {
  std::string out;
  for (const auto& a : argv) out += (out.empty() ? "" : " ") + shell_quote(a);
  return out;
}

bool stage_done(const StageRun& s) { return fs::exists(fs::path(s.dir) / kDoneMarker); }

std::string command_stamp(const std::vector<std::string>& command) {
  std::string out;
  for (const auto& a : command) out += a + "\n";
  return out;
}

namespace {

// Two command stamps name the same run when they differ at most in the app's directory: a rebuild into another
// build tree (or the same tree at another path on a cluster's compute nodes) runs the same app on the same config.
bool same_command(const std::string& a, const std::string& b) {
  const size_t ea = a.find('\n'), eb = b.find('\n');
  if (ea == std::string::npos || eb == std::string::npos) return a == b;
  return fs::path(a.substr(0, ea)).filename() == fs::path(b.substr(0, eb)).filename() &&
         a.compare(ea, std::string::npos, b, eb, std::string::npos) == 0;
}

}  // namespace

void check_finished_stages(const Sweep& sweep) {
  for (const auto& run : sweep.runs) {
    for (const auto& s : run.stages) {
      if (!stage_done(s)) continue;
      const std::string remove = fmt::format("remove {} to run this point and seed again, or run the file with "
                                             "another --out", run.dir);
      // Only the stages a result is computed from matter: a sibling stage added to the file later (another
      // readout of the same pretraining) leaves the finished ones valid.
      for (int up = s.upstream; up >= 0; up = run.stages[up].upstream)
        if (!stage_done(run.stages[up]))
          throw SweepError(fmt::format("sweep error: {} finished, but the stage it starts from ({}) is not: {}", s.dir,
                                       run.stages[up].dir, remove));
      if (fs::is_symlink(s.dir)) {
        // Linked to another sweep's run of the same identity (share.h): its command line is that sweep's.
        if (read_text((fs::path(s.dir) / kIdentityFile).string()) != s.identity)
          throw SweepError(fmt::format("sweep error: {} is linked to {}, whose config is no longer this stage's: "
                                       "remove the link to run it here",
                                       s.dir, fs::read_symlink(s.dir).string()));
        continue;
      }
      const std::string was = read_text((fs::path(s.dir) / kAttemptStamp).string());
      if (!same_command(was, command_stamp(s.command))) {
        // The first argument that differs, so that the message says what changed.
        std::istringstream old_args(was);
        std::string arg, old_arg, new_arg;
        for (size_t i = 0; i < s.command.size() || old_args; ++i) {
          if (!std::getline(old_args, arg)) arg = "(nothing)";
          const std::string now = i < s.command.size() ? s.command[i] : "(nothing)";
          if (arg != now) {
            old_arg = arg;
            new_arg = now;
            break;
          }
        }
        throw SweepError(fmt::format("sweep error: {} finished with another command line than the sweep file gives "
                                     "now ('{}' there, '{}' now): {}",
                                     s.dir, old_arg, new_arg, remove));
      }
    }
  }
}

void write_sweep_json(const Sweep& sweep) {
  const SweepSpec& spec = sweep.spec;
  json j;
  j["name"] = spec.name;
  j["file"] = spec.file;
  j["paper_note"] = spec.paper_note;
  j["seeds"] = spec.seeds;
  j["stages"] = json::array();
  for (const auto& s : spec.stages)
    j["stages"].push_back({{"name", s.name}, {"app", s.app}, {"config", s.config}, {"processes", s.processes},
                           {"from", s.from}, {"from_ema", s.from_ema}});
  j["points"] = json::array();
  for (const auto& p : spec.points) j["points"].push_back({{"name", p.name}, {"paper", p.paper}});
  j["metrics"] = json::array();
  for (const auto& m : spec.metrics)
    j["metrics"].push_back({{"name", m.name}, {"stage", m.stage}, {"kind", m.kind}, {"key", m.key},
                            {"mode", m.mode}, {"label", m.label}});
  j["runs"] = json::array();
  for (const auto& r : sweep.runs) {
    json stages = json::array();
    for (const auto& s : r.stages)
      stages.push_back({{"stage", s.stage}, {"app", s.app}, {"dir", s.dir}, {"processes", s.processes},
                        {"upstream", s.upstream}, {"command", s.command}});
    j["runs"].push_back({{"point", r.point}, {"seed", r.seed}, {"dir", r.dir}, {"stages", stages}});
  }
  fs::create_directories(sweep.dir);
  write_text_atomic((fs::path(sweep.dir) / "sweep.json").string(), j.dump(1) + "\n");
}

Sweep read_sweep_json(const std::string& sweep_dir) {
  const fs::path path = fs::path(sweep_dir) / "sweep.json";
  std::ifstream in(path);
  if (!in)
    throw SweepError("sweep error: " + path.string() + ": cannot read (not a sweep directory? `nepa_sweep run` or "
                     "`slurm` writes it)");
  try {
    const json j = json::parse(in);
    Sweep sweep;
    sweep.dir = fs::absolute(sweep_dir).lexically_normal().string();
    SweepSpec& spec = sweep.spec;
    spec.name = j.at("name");
    spec.file = j.at("file");
    spec.paper_note = j.at("paper_note");
    spec.seeds = j.at("seeds").get<std::vector<long long>>();
    for (const auto& s : j.at("stages")) {
      StageSpec st;
      st.name = s.at("name");
      st.app = s.at("app");
      st.config = s.at("config");
      st.processes = s.at("processes");
      st.from = s.at("from");
      st.from_ema = s.at("from_ema");
      spec.stages.push_back(st);
    }
    for (const auto& p : j.at("points")) {
      PointSpec pt;
      pt.name = p.at("name");
      pt.paper = p.at("paper").get<std::map<std::string, double>>();
      spec.points.push_back(pt);
    }
    for (const auto& m : j.at("metrics"))
      spec.metrics.push_back({m.at("name"), m.at("stage"), m.at("kind"), m.at("key"), m.at("mode"), m.at("label")});
    for (const auto& r : j.at("runs")) {
      Run run;
      run.point = r.at("point");
      run.seed = r.at("seed");
      run.dir = r.at("dir");
      for (const auto& s : r.at("stages")) {
        StageRun st;
        st.stage = s.at("stage");
        st.app = s.at("app");
        st.dir = s.at("dir");
        st.processes = s.at("processes");
        st.upstream = s.at("upstream");
        st.command = s.at("command").get<std::vector<std::string>>();
        run.stages.push_back(st);
      }
      sweep.runs.push_back(std::move(run));
    }
    return sweep;
  } catch (const json::exception& e) {
    throw SweepError("sweep error: " + path.string() + ": " + e.what());
  }
}

}  // namespace nepa::sweep
