// Reading a sweep file strictly, as every config is read: each mapping lists its keys, and anything else is an
// error that names the sweep file and the line (yaml-cpp's marks are 0-based).
#include <yaml-cpp/yaml.h>

#include <cctype>
#include <charconv>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <sstream>

#include "nepa/sweep/sweep.h"

namespace fs = std::filesystem;

namespace nepa::sweep {
namespace {

int line_of(const YAML::Node& n) { return n.Mark().line >= 0 ? n.Mark().line + 1 : 0; }

class Reader {
 public:
  explicit Reader(std::string file) : file_(std::move(file)) {}

  [[noreturn]] void fail(const YAML::Node& at, const std::string& what) const { fail(line_of(at), what); }
  [[noreturn]] void fail(int line, const std::string& what) const {
    throw SweepError("sweep error: " + file_ + (line > 0 ? ":" + std::to_string(line) : "") + ": " + what);
  }

  // The keys of a mapping, each once, each one of `known`; `required` must be present.
  void keys(const YAML::Node& map, const std::string& where, const std::set<std::string>& known,
            const std::set<std::string>& required = {}) const {
    if (!map.IsMap()) fail(map, where + ": expected a mapping");
    std::set<std::string> seen;
    for (const auto& kv : map) {
      const std::string key = kv.first.Scalar();
      if (!seen.insert(key).second) fail(kv.first, where + ": duplicate key '" + key + "'");
      if (!known.count(key)) {
        std::string list;
        for (const auto& k : known) list += (list.empty() ? "" : ", ") + k;
        fail(kv.first, where + ": unknown key '" + key + "' (known: " + list + ")");
      }
    }
    for (const auto& r : required)
      if (!map[r]) fail(map, where + ": missing '" + r + "'");
  }

  std::string str(const YAML::Node& n, const std::string& what) const {
    if (!n.IsScalar() || n.Scalar().empty()) fail(n, what + ": expected a non-empty string");
    return n.Scalar();
  }
  long long integer(const YAML::Node& n, const std::string& what) const {
    long long v = 0;
    const std::string s = n.IsScalar() ? n.Scalar() : "";
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) fail(n, what + ": expected an integer");
    return v;
  }
  double number(const YAML::Node& n, const std::string& what) const {
    double v = 0;
    const std::string s = n.IsScalar() ? n.Scalar() : "";
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || end != s.data() + s.size()) fail(n, what + ": expected a number");
    return v;
  }
  bool boolean(const YAML::Node& n, const std::string& what) const {
    if (n.IsScalar() && (n.Scalar() == "true" || n.Scalar() == "false")) return n.Scalar() == "true";
    fail(n, what + ": expected true or false");
  }
  // Names become directory names and shell words: letters, digits and ._=+- only.
  std::string name(const YAML::Node& n, const std::string& what, bool allow_grid_chars = false) const {
    std::string s = str(n, what);
    static const std::regex plain("[A-Za-z0-9][A-Za-z0-9_.-]*"), grid("[A-Za-z0-9][A-Za-z0-9_.=+-]*");
    if (!std::regex_match(s, allow_grid_chars ? grid : plain))
      fail(n, what + " '" + s + "': use letters, digits, '_', '.', '-' (it names a directory)");
    return s;
  }
  std::vector<std::string> strings(const YAML::Node& n, const std::string& what) const {
    if (!n.IsSequence()) fail(n, what + ": expected a list of strings");
    std::vector<std::string> out;
    for (const auto& e : n) out.push_back(str(e, what));
    return out;
  }

  // `key: value` pairs as --set arguments; keys are section.key paths.
  std::vector<Override> overrides(const YAML::Node& map, const std::string& where) const {
    if (!map.IsMap()) fail(map, where + ": expected a mapping of section.key: value");
    std::vector<Override> out;
    std::set<std::string> seen;
    for (const auto& kv : map) {
      const std::string key = kv.first.Scalar();
      if (!seen.insert(key).second) fail(kv.first, where + ": duplicate key '" + key + "'");
      if (key.find('.') == std::string::npos || key.find('=') != std::string::npos)
        fail(kv.first, where + ": '" + key + "' is not a section.key path");
      out.push_back({key, value_text(kv.second), line_of(kv.first)});
    }
    return out;
  }

  static std::string value_text(const YAML::Node& v) {
    if (v.IsNull()) return "null";
    if (v.IsScalar()) return v.Scalar();
    YAML::Emitter e;
    e << YAML::Flow << v;
    return e.c_str();
  }

 private:
  std::string file_;
};

// A config file named in the sweep file (a stage's, or a point's replacement): relative to the sweep file's folder,
// and it must exist.
std::string config_path(const Reader& r, const YAML::Node& n, const std::string& base_dir, const std::string& what) {
  fs::path config = r.str(n, what);
  if (config.is_relative()) config = fs::path(base_dir) / config;
  config = config.lexically_normal();
  if (!fs::is_regular_file(config)) r.fail(n, "config " + config.string() + ": no such file");
  return config.string();
}

StageSpec read_stage(const Reader& r, const YAML::Node& n, const std::string& base_dir,
                     const std::vector<StageSpec>& earlier) {
  r.keys(n, "stage", {"name", "app", "config", "set", "processes", "from", "from_ema", "sbatch"},
         {"name", "app", "config"});
  StageSpec s;
  s.line = line_of(n);
  s.name = r.name(n["name"], "stage name");
  if (s.name == "all") r.fail(n["name"], "stage name 'all' is reserved (it means every stage in a point's set)");
  for (const auto& e : earlier)
    if (e.name == s.name) r.fail(n["name"], "duplicate stage name '" + s.name + "'");
  s.app = r.str(n["app"], "app");
  if (s.app != "nepa_pretrain" && s.app != "nepa_finetune" && s.app != "nepa_seg")
    r.fail(n["app"], "app '" + s.app + "': expected nepa_pretrain, nepa_finetune or nepa_seg");
  s.config = config_path(r, n["config"], base_dir, "config");
  if (n["set"]) s.set = r.overrides(n["set"], "stage " + s.name + " set");
  if (n["processes"]) {
    s.processes = static_cast<int>(r.integer(n["processes"], "processes"));
    if (s.processes < 1) r.fail(n["processes"], "processes must be at least 1");
  }
  if (n["from"]) {
    s.from = r.str(n["from"], "from");
    bool found = false;
    for (const auto& e : earlier) found = found || e.name == s.from;
    if (!found) r.fail(n["from"], "from '" + s.from + "': no earlier stage of that name");
  }
  if (n["from_ema"]) {
    s.from_ema = r.boolean(n["from_ema"], "from_ema");
    if (s.from.empty()) r.fail(n["from_ema"], "from_ema needs from");
  }
  if (n["sbatch"]) s.sbatch = r.strings(n["sbatch"], "sbatch");
  return s;
}

// A point's `set:` is keyed by stage name (or `all`), each a mapping of overrides.
std::map<std::string, std::vector<Override>> read_point_set(const Reader& r, const YAML::Node& n,
                                                            const std::vector<StageSpec>& stages,
                                                            const std::string& where) {
  std::set<std::string> known = {"all"};
  for (const auto& s : stages) known.insert(s.name);
  r.keys(n, where + " set (keys are stage names or 'all')", known);
  std::map<std::string, std::vector<Override>> out;
  for (const auto& kv : n) out[kv.first.Scalar()] = r.overrides(kv.second, where + " set." + kv.first.Scalar());
  return out;
}

// A point's `config:` replaces stages' configs for that point (e.g. AIM's pretraining config beside NEPA's):
// stage name -> path, relative to the sweep file, which must exist.
std::map<std::string, std::string> read_point_config(const Reader& r, const YAML::Node& n,
                                                     const std::vector<StageSpec>& stages, const std::string& base_dir,
                                                     const std::string& where) {
  std::set<std::string> known;
  for (const auto& s : stages) known.insert(s.name);
  r.keys(n, where + " config (keys are stage names)", known);
  std::map<std::string, std::string> out;
  for (const auto& kv : n)
    out[kv.first.Scalar()] = config_path(r, kv.second, base_dir, where + " config." + kv.first.Scalar());
  return out;
}

// Directory-safe text of a grid value: [0.8, 1.0] -> 0.8-1.0.
std::string value_label(const std::string& text) {
  std::string out;
  for (char c : text) {
    if (std::isalnum(static_cast<unsigned char>(c)) || c == '.' || c == '_' || c == '-') out += c;
    else if (c == ',' && !out.empty() && out.back() != '-') out += '-';
  }
  return out.empty() ? "empty" : out;
}

std::vector<PointSpec> read_grid(const Reader& r, const YAML::Node& grid, const std::vector<StageSpec>& stages) {
  struct Axis {
    std::string stage, key, label;
    std::vector<std::string> values;
    int line;
  };
  std::set<std::string> known = {"all"};
  for (const auto& s : stages) known.insert(s.name);
  r.keys(grid, "grid (keys are stage names or 'all')", known);
  std::vector<Axis> axes;
  for (const auto& st : grid) {
    if (!st.second.IsMap()) r.fail(st.second, "grid." + st.first.Scalar() + ": expected a mapping of key: [values]");
    for (const auto& kv : st.second) {
      Axis a{st.first.Scalar(), kv.first.Scalar(), "", {}, line_of(kv.first)};
      if (a.key.find('.') == std::string::npos) r.fail(kv.first, "grid: '" + a.key + "' is not a section.key path");
      if (!kv.second.IsSequence() || kv.second.size() == 0)
        r.fail(kv.second, "grid " + a.stage + "." + a.key + ": expected a non-empty list of values");
      for (const auto& v : kv.second) a.values.push_back(Reader::value_text(v));
      axes.push_back(std::move(a));
    }
  }
  if (axes.empty()) r.fail(grid, "grid: no axes");
  // The last key component names an axis unless two axes share it.
  for (auto& a : axes) {
    auto short_key = [](const std::string& k) { return k.substr(k.rfind('.') + 1); };
    int same = 0;
    for (const auto& b : axes) same += short_key(b.key) == short_key(a.key);
    a.label = same > 1 ? (a.stage == "all" ? "" : a.stage + ".") + a.key : short_key(a.key);
  }
  std::vector<PointSpec> points(1);
  for (const auto& a : axes) {
    std::vector<PointSpec> next;
    for (const auto& p : points)
      for (const auto& v : a.values) {
        PointSpec q = p;
        q.name += (q.name.empty() ? "" : "+") + a.label + "=" + value_label(v);
        q.set[a.stage].push_back({a.key, v, a.line});
        q.line = line_of(grid);
        next.push_back(std::move(q));
      }
    points = std::move(next);
  }
  return points;
}

MetricSpec read_metric(const Reader& r, const YAML::Node& n, const std::vector<StageSpec>& stages) {
  r.keys(n, "metric", {"name", "stage", "kind", "key", "mode", "label"}, {"name", "stage", "key"});
  MetricSpec m;
  m.name = r.name(n["name"], "metric name");
  m.stage = r.str(n["stage"], "metric stage");
  bool found = false;
  for (const auto& s : stages) found = found || s.name == m.stage;
  if (!found) r.fail(n["stage"], "metric " + m.name + ": no stage '" + m.stage + "'");
  if (n["kind"]) m.kind = r.str(n["kind"], "metric kind");
  m.key = r.str(n["key"], "metric key");
  if (n["mode"]) m.mode = r.str(n["mode"], "metric mode");
  if (m.mode != "last" && m.mode != "max" && m.mode != "min")
    r.fail(n["mode"], "metric mode '" + m.mode + "': expected last, max or min");
  m.label = n["label"] ? r.str(n["label"], "metric label") : m.name;
  return m;
}

}  // namespace

SweepSpec parse_sweep(const std::string& yaml, const std::string& file, const std::string& base_dir) {
  Reader r(file);
  YAML::Node root;
  try {
    root = YAML::Load(yaml);
  } catch (const YAML::Exception& e) {
    r.fail(e.mark.line >= 0 ? e.mark.line + 1 : 0, e.msg);
  }
  r.keys(root, "sweep", {"name", "paper_note", "stages", "points", "grid", "seeds", "metrics", "sbatch"},
         {"name", "stages", "seeds"});
  SweepSpec spec;
  spec.file = file;
  spec.name = r.name(root["name"], "name");
  if (root["paper_note"]) spec.paper_note = r.str(root["paper_note"], "paper_note");
  if (root["sbatch"]) spec.sbatch = r.strings(root["sbatch"], "sbatch");

  const YAML::Node stages = root["stages"];
  if (!stages.IsSequence() || stages.size() == 0) r.fail(stages, "stages: expected a non-empty list");
  for (const auto& s : stages) spec.stages.push_back(read_stage(r, s, base_dir, spec.stages));

  if (!root["points"] == !root["grid"]) r.fail(root, "give exactly one of points: (a list) or grid: (key -> values)");
  if (root["points"]) {
    const YAML::Node points = root["points"];
    if (!points.IsSequence() || points.size() == 0) r.fail(points, "points: expected a non-empty list");
    for (const auto& n : points) {
      r.keys(n, "point", {"name", "set", "paper", "config"}, {"name"});
      PointSpec p;
      p.line = line_of(n);
      p.name = r.name(n["name"], "point name");
      for (const auto& q : spec.points)
        if (q.name == p.name) r.fail(n["name"], "duplicate point name '" + p.name + "'");
      if (n["set"]) p.set = read_point_set(r, n["set"], spec.stages, "point " + p.name);
      if (n["config"]) p.config = read_point_config(r, n["config"], spec.stages, base_dir, "point " + p.name);
      if (n["paper"]) {
        if (!n["paper"].IsMap()) r.fail(n["paper"], "paper: expected a mapping of metric name: figure");
        for (const auto& kv : n["paper"]) p.paper[kv.first.Scalar()] = r.number(kv.second, "paper figure");
      }
      spec.points.push_back(std::move(p));
    }
  } else {
    spec.points = read_grid(r, root["grid"], spec.stages);
    for (size_t i = 0; i < spec.points.size(); ++i)
      for (size_t j = 0; j < i; ++j)
        if (spec.points[i].name == spec.points[j].name)
          r.fail(root["grid"], "grid values give two points the name '" + spec.points[i].name + "'");
  }

  const YAML::Node seeds = root["seeds"];
  if (!seeds.IsSequence() || seeds.size() == 0) r.fail(seeds, "seeds: expected a non-empty list of integers");
  for (const auto& s : seeds) {
    long long v = r.integer(s, "seed");
    for (long long e : spec.seeds)
      if (e == v) r.fail(s, "duplicate seed " + std::to_string(v));
    spec.seeds.push_back(v);
  }

  if (root["metrics"]) {
    if (!root["metrics"].IsSequence()) r.fail(root["metrics"], "metrics: expected a list");
    for (const auto& n : root["metrics"]) {
      MetricSpec m = read_metric(r, n, spec.stages);
      for (const auto& e : spec.metrics)
        if (e.name == m.name) r.fail(n["name"], "duplicate metric name '" + m.name + "'");
      spec.metrics.push_back(std::move(m));
    }
  }
  // Checked last: a paper figure names a metric, and the seed is the sweep's to set.
  for (const auto& p : spec.points) {
    for (const auto& [metric, v] : p.paper) {
      bool found = false;
      for (const auto& m : spec.metrics) found = found || m.name == metric;
      if (!found) r.fail(p.line, "point " + p.name + ": paper figure for '" + metric + "', which is not a metric");
    }
    for (const auto& [stage, sets] : p.set)
      for (const auto& o : sets)
        if (o.key == "train.seed") r.fail(o.line, "train.seed is set by seeds:, not by a point");
  }
  for (const auto& s : spec.stages)
    for (const auto& o : s.set)
      if (o.key == "train.seed" || o.key == "train.output_dir")
        r.fail(o.line, o.key + " is set by the sweep (seeds: and the run directory), not by a stage");
  return spec;
}

SweepSpec load_sweep(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw SweepError("sweep error: " + path + ": cannot read");
  std::stringstream text;
  text << in.rdbuf();
  const fs::path abs = fs::absolute(path).lexically_normal();
  return parse_sweep(text.str(), abs.string(), abs.parent_path().string());
}

}  // namespace nepa::sweep
