// Sweep files: expansion into runs and command lines, strictness (with the sweep file's line), the SLURM script
// set, and the report's statistics on fabricated run directories.
#include <gtest/gtest.h>
#include <unistd.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "nepa/sweep/report.h"
#include "nepa/sweep/share.h"
#include "nepa/sweep/slurm.h"
#include "nepa/sweep/sweep.h"

namespace fs = std::filesystem;
using namespace nepa::sweep;

namespace {

fs::path fresh_dir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("nepa_test_sweep_" + std::to_string(getpid()) + "_" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

void write(const fs::path& p, const std::string& text) {
  fs::create_directories(p.parent_path());
  std::ofstream(p) << text;
}

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Two stages, the second from the first's export; configs are placeholders unless a test loads them.
const char* kTwoStages = R"(name: demo
stages:
  - name: pretrain
    app: nepa_pretrain
    config: pre.yaml
    set: {schedule.epochs: 1}
  - name: probe
    app: nepa_finetune
    config: probe.yaml
    from: pretrain
points:
  - name: causal
    set:
      pretrain: {model.is_causal: true}
    paper: {top1: 76.8}
  - name: bidir
    set:
      pretrain: {model.is_causal: false}
      all: {data.crop_scale: [0.8, 1.0]}
    paper: {top1: 73.6}
seeds: [11, 12]
metrics:
  - {name: top1, stage: probe, key: top1}
)";

SweepSpec parse_in(const fs::path& dir, const std::string& yaml) {
  for (const char* c : {"pre.yaml", "probe.yaml"})
    if (!fs::exists(dir / c)) write(dir / c, "{}\n");
  return parse_sweep(yaml, (dir / "sweep.yaml").string(), dir.string());
}

std::vector<std::string> sets_of(const StageRun& s) {
  std::vector<std::string> out;
  for (size_t i = 0; i + 1 < s.command.size(); ++i)
    if (s.command[i] == "--set") out.push_back(s.command[i + 1]);
  return out;
}

bool has(const std::vector<std::string>& v, const std::string& x) {
  return std::find(v.begin(), v.end(), x) != v.end();
}

std::string error_of(const fs::path& dir, const std::string& yaml) {
  try {
    parse_in(dir, yaml);
  } catch (const SweepError& e) {
    return e.what();
  }
  return "(no error)";
}

std::string replace(std::string s, const std::string& from, const std::string& to) {
  auto at = s.find(from);
  EXPECT_NE(at, std::string::npos) << from;
  return s.replace(at, from.size(), to);
}

}  // namespace

TEST(SweepExpand, PointsTimesSeedsTimesStages) {
  const fs::path dir = fresh_dir("expand");
  const Sweep sw = expand(parse_in(dir, kTwoStages), (dir / "out").string(), "/opt/nepa/bin");
  ASSERT_EQ(sw.runs.size(), 4u);
  const std::vector<std::pair<std::string, long long>> order = {
      {"causal", 11}, {"causal", 12}, {"bidir", 11}, {"bidir", 12}};
  for (size_t i = 0; i < 4; ++i) {
    const nepa::sweep::Run& r = sw.runs[i];
    EXPECT_EQ(r.point, order[i].first);
    EXPECT_EQ(r.seed, order[i].second);
    ASSERT_EQ(r.stages.size(), 2u);
    EXPECT_EQ(r.dir, (dir / "out" / r.point / ("seed" + std::to_string(r.seed))).string());
    const StageRun& pre = r.stages[0];
    const StageRun& probe = r.stages[1];
    EXPECT_EQ(pre.dir, r.dir + "/pretrain");
    EXPECT_EQ(probe.dir, r.dir + "/probe");
    EXPECT_EQ(pre.command[0], "/opt/nepa/bin/nepa_pretrain");
    EXPECT_EQ(probe.command[0], "/opt/nepa/bin/nepa_finetune");
    // The seed reaches every stage; the run directory and resumption are on every command line.
    for (const StageRun* s : {&pre, &probe}) {
      EXPECT_TRUE(has(sets_of(*s), "train.seed=" + std::to_string(r.seed)));
      EXPECT_EQ(s->command[3], "--output-dir");
      EXPECT_EQ(s->command[4], s->dir);
      EXPECT_EQ(s->command[5], "--resume");
      EXPECT_EQ(s->command[6], "auto");
    }
    EXPECT_EQ(pre.command[2], (dir / "pre.yaml").string());
    // The stage's own set reaches that stage only; a point's per-stage set only its stage; `all` every stage.
    EXPECT_TRUE(has(sets_of(pre), "schedule.epochs=1"));
    EXPECT_FALSE(has(sets_of(probe), "schedule.epochs=1"));
    const std::string causal = r.point == "causal" ? "true" : "false";
    EXPECT_TRUE(has(sets_of(pre), "model.is_causal=" + causal));
    EXPECT_FALSE(has(sets_of(probe), "model.is_causal=" + causal));
    EXPECT_EQ(has(sets_of(pre), "data.crop_scale=[0.8, 1.0]"), r.point == "bidir");
    EXPECT_EQ(has(sets_of(probe), "data.crop_scale=[0.8, 1.0]"), r.point == "bidir");
    // The downstream stage starts from its own run's export.
    EXPECT_EQ(probe.upstream, 0);
    ASSERT_GE(probe.command.size(), 2u);
    EXPECT_EQ(probe.command[probe.command.size() - 2], "--init");
    EXPECT_EQ(probe.command.back(), pre.dir + "/final");
    EXPECT_EQ(pre.upstream, -1);
    EXPECT_FALSE(has(pre.command, "--init"));
  }
  // The seed comes last: it wins over anything before it.
  EXPECT_EQ(sets_of(sw.runs[0].stages[0]).back(), "train.seed=11");
}

TEST(SweepExpand, FromEmaAndProcesses) {
  const fs::path dir = fresh_dir("ema");
  std::string yaml = replace(kTwoStages, "    from: pretrain\n", "    from: pretrain\n    from_ema: true\n");
  yaml = replace(yaml, "    config: pre.yaml\n", "    config: pre.yaml\n    processes: 2\n");
  const Sweep sw = expand(parse_in(dir, yaml), (dir / "out").string(), "/b");
  EXPECT_EQ(sw.runs[0].stages[1].command.back(), sw.runs[0].stages[0].dir + "/final_ema");
  EXPECT_EQ(sw.runs[0].stages[0].processes, 2);
  EXPECT_EQ(sw.runs[0].stages[1].processes, 1);
}

// A point may replace a stage's config (AIM's pretraining beside NEPA's); the others keep the stage's. A missing
// file or an unknown stage is an error naming the line.
TEST(SweepExpand, APointReplacesAStagesConfig) {
  const fs::path dir = fresh_dir("point_config");
  write(dir / "aim.yaml", "{}\n");
  std::string yaml = replace(kTwoStages, "    paper: {top1: 73.6}\n", "    paper: {top1: 73.6}\n    config: {pretrain: aim.yaml}\n");
  const Sweep sw = expand(parse_in(dir, yaml), (dir / "out").string(), "/b");
  for (const auto& r : sw.runs) {
    EXPECT_EQ(r.stages[0].command[2], (dir / (r.point == "bidir" ? "aim.yaml" : "pre.yaml")).string()) << r.point;
    EXPECT_EQ(r.stages[1].command[2], (dir / "probe.yaml").string()) << r.point;
  }
  std::string msg = error_of(dir, replace(yaml, "config: {pretrain: aim.yaml}", "config: {pretrain: nope.yaml}"));
  EXPECT_NE(msg.find(":21: config " + (dir / "nope.yaml").string() + ": no such file"), std::string::npos) << msg;
  msg = error_of(dir, replace(yaml, "config: {pretrain: aim.yaml}", "config: {finetune: aim.yaml}"));
  EXPECT_NE(msg.find("finetune"), std::string::npos) << msg;
  EXPECT_NE(msg.find(":21:"), std::string::npos) << msg;
}

TEST(SweepExpand, GridNamesAreReadableAndUnique) {
  const fs::path dir = fresh_dir("grid");
  std::string yaml = kTwoStages;
  const auto begin = yaml.find("points:"), end = yaml.find("seeds:");
  yaml.replace(begin, end - begin,
               "grid:\n  pretrain:\n    objective.mask_ratio: [0.0, 0.4]\n    model.is_causal: [true, false]\n"
               "  probe:\n    model.is_causal: [true]\n");
  yaml = replace(yaml, "metrics:\n  - {name: top1, stage: probe, key: top1}\n", "");
  const SweepSpec spec = parse_in(dir, yaml);
  std::vector<std::string> names;
  for (const auto& p : spec.points) names.push_back(p.name);
  // The last key component names an axis unless two axes share it (then the stage and the full key).
  EXPECT_EQ(names,
            (std::vector<std::string>{"mask_ratio=0.0+pretrain.model.is_causal=true+probe.model.is_causal=true",
                                      "mask_ratio=0.0+pretrain.model.is_causal=false+probe.model.is_causal=true",
                                      "mask_ratio=0.4+pretrain.model.is_causal=true+probe.model.is_causal=true",
                                      "mask_ratio=0.4+pretrain.model.is_causal=false+probe.model.is_causal=true"}));
  const Sweep sw = expand(spec, (dir / "out").string(), "/b");
  ASSERT_EQ(sw.runs.size(), 8u);
  const auto pre = sets_of(sw.runs[2].stages[0]);  // mask 0.0, bidirectional pretraining, seed 11
  EXPECT_TRUE(has(pre, "objective.mask_ratio=0.0"));
  EXPECT_TRUE(has(pre, "model.is_causal=false"));
  const auto probe = sets_of(sw.runs[2].stages[1]);
  EXPECT_FALSE(has(probe, "objective.mask_ratio=0.0"));
  EXPECT_TRUE(has(probe, "model.is_causal=true"));

  // Values that reduce to the same directory name are refused.
  std::string clash = replace(yaml, "[0.0, 0.4]", "[\"a b\", ab]");
  EXPECT_NE(error_of(dir, clash).find("two points the name"), std::string::npos) << error_of(dir, clash);
}

TEST(SweepFile, UnknownKeysNameTheFileAndLine) {
  const fs::path dir = fresh_dir("strict");
  const std::string file = (dir / "sweep.yaml").string();
  // Line 6 of the file: a key the stage does not have.
  std::string e = error_of(dir, replace(kTwoStages, "    set: {schedule.epochs: 1}\n", "    setting: 3\n"));
  EXPECT_NE(e.find(file + ":6: stage: unknown key 'setting'"), std::string::npos) << e;
  e = error_of(dir, replace(kTwoStages, "    paper: {top1: 73.6}\n", "    paper: {top1: 73.6}\n    seed: 3\n"));
  EXPECT_NE(e.find(file + ":21: point: unknown key 'seed'"), std::string::npos) << e;
  e = error_of(dir, std::string(kTwoStages) + "extra: 1\n");
  EXPECT_NE(e.find(file + ":24: sweep: unknown key 'extra'"), std::string::npos) << e;
  e = error_of(dir, replace(kTwoStages, "  - {name: top1, stage: probe, key: top1}",
                            "  - {name: top1, stage: probe, key: top1, mode: best}"));
  EXPECT_NE(e.find(file + ":23: metric mode 'best'"), std::string::npos) << e;
  // A point's set is keyed by stage names.
  e = error_of(
      dir, replace(kTwoStages, "      pretrain: {model.is_causal: true}", "      pretrian: {model.is_causal: true}"));
  EXPECT_NE(e.find(file + ":14: point causal set (keys are stage names or 'all'): unknown key 'pretrian'"),
            std::string::npos)
      << e;
  e = error_of(dir, replace(kTwoStages, "    from: pretrain\n", "    from: probe\n"));
  EXPECT_NE(e.find(file + ":10: from 'probe': no earlier stage"), std::string::npos) << e;
  e = error_of(dir, replace(kTwoStages, "    paper: {top1: 76.8}\n", "    paper: {top5: 76.8}\n"));
  EXPECT_NE(e.find("paper figure for 'top5', which is not a metric"), std::string::npos) << e;
  e = error_of(dir, replace(kTwoStages, "{model.is_causal: true}", "{train.seed: 5}"));
  EXPECT_NE(e.find(file + ":14: train.seed is set by seeds:"), std::string::npos) << e;
  e = error_of(dir, replace(kTwoStages, "config: probe.yaml", "config: missing.yaml"));
  EXPECT_NE(e.find(file + ":9: config " + (dir / "missing.yaml").string() + ": no such file"), std::string::npos) << e;
  e = error_of(dir, "name: x\nstages: [\n");
  EXPECT_NE(e.find("sweep error: " + file + ":"), std::string::npos) << e;
}

TEST(SweepFile, DuplicatesAreRejected) {
  const fs::path dir = fresh_dir("dup");
  const std::string file = (dir / "sweep.yaml").string();
  std::string e = error_of(dir, replace(kTwoStages, "  - name: bidir", "  - name: causal"));
  EXPECT_NE(e.find(file + ":16: duplicate point name 'causal'"), std::string::npos) << e;
  e = error_of(dir, replace(kTwoStages, "seeds: [11, 12]", "seeds: [11, 11]"));
  EXPECT_NE(e.find("duplicate seed 11"), std::string::npos) << e;
  e = error_of(dir, replace(kTwoStages, "  - name: probe", "  - name: pretrain"));
  EXPECT_NE(e.find(file + ":7: duplicate stage name 'pretrain'"), std::string::npos) << e;
  e = error_of(
      dir, replace(kTwoStages, "    set: {schedule.epochs: 1}", "    set: {schedule.epochs: 1, schedule.epochs: 2}"));
  EXPECT_NE(e.find(file + ":6: stage pretrain set: duplicate key 'schedule.epochs'"), std::string::npos) << e;
}

// Every stage run's config is loaded as the app will load it: a mistyped key fails before anything runs, with
// the sweep line of the override.
TEST(SweepFile, OverridesAreCheckedAgainstTheConfigs) {
  const fs::path dir = fresh_dir("configs");
  const std::string src = NEPA_SOURCE_DIR;
  write(dir / "pre.yaml", "base: " + src + "/configs/pretrain/fmnist_tiny.yaml\n");
  write(dir / "probe.yaml", "base: " + src + "/configs/finetune/fmnist_tiny_linprobe.yaml\n");
  Sweep good = expand(parse_in(dir, kTwoStages), (dir / "out").string(), "/b");
  EXPECT_NO_THROW(check_configs(good));
  const std::string typo =
      replace(kTwoStages, "all: {data.crop_scale: [0.8, 1.0]}", "all: {data.crop_scael: [0.8, 1.0]}");
  try {
    Sweep bad = expand(parse_in(dir, typo), (dir / "out").string(), "/b");
    check_configs(bad);
    FAIL() << "no error";
  } catch (const SweepError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find((dir / "sweep.yaml").string() + ":19: point bidir, stage pretrain: config error"),
              std::string::npos)
        << what;
    EXPECT_NE(what.find("data.crop_scael"), std::string::npos) << what;
  }
}

TEST(SweepSlurm, TwoPointsTwoSeedsTwoStages) {
  const fs::path dir = fresh_dir("slurm");
  std::string yaml = replace(kTwoStages, "    config: pre.yaml\n",
                             "    config: pre.yaml\n    processes: 4\n"
                             "    sbatch: [--gpus-per-task=1]\n");
  yaml += "sbatch: [--time=1:00:00]\n";
  const Sweep sw = expand(parse_in(dir, yaml), (dir / "out").string(), "/opt/nepa/bin");
  const auto files = write_slurm(sw, (dir / "out" / "slurm").string());
  ASSERT_EQ(files.size(), 4u);  // tasks.tsv, two stage scripts, submit.sh
  const fs::path sd = dir / "out" / "slurm";
  const std::string pre = read(sd / "pretrain.sbatch"), probe = read(sd / "probe.sbatch");
  for (const std::string* s : {&pre, &probe}) {
    EXPECT_NE(s->find("\n#SBATCH --array=0-3\n"), std::string::npos);
    EXPECT_NE(s->find("\n#SBATCH --time=1:00:00\n"), std::string::npos);
  }
  EXPECT_NE(pre.find("\n#SBATCH --ntasks=4\n"), std::string::npos);
  EXPECT_NE(pre.find("\n#SBATCH --gpus-per-task=1\n"), std::string::npos);
  EXPECT_NE(probe.find("\n#SBATCH --ntasks=1\n"), std::string::npos);
  EXPECT_EQ(probe.find("--gpus-per-task"), std::string::npos);
  // Task i of every stage is run i, with exactly the local command line.
  for (size_t i = 0; i < sw.runs.size(); ++i) {
    for (size_t s = 0; s < 2; ++s) {
      const StageRun& st = sw.runs[i].stages[s];
      const std::string& text = s == 0 ? pre : probe;
      const std::string entry = std::to_string(i) + ") POINT=" + sw.runs[i].point +
                                " SEED=" + std::to_string(sw.runs[i].seed) + " RUN=" + st.dir + "\n     CMD=(" +
                                shell_command(st.command) + ") ;;\n";
      EXPECT_NE(text.find(entry), std::string::npos) << entry << "\nnot in\n" << text;
    }
  }
  EXPECT_NE(pre.find("srun --kill-on-bad-exit=1 \"${CMD[@]}\""), std::string::npos);
  // The table maps index -> run.
  EXPECT_EQ(read(sd / "tasks.tsv"), "index\tpoint\tseed\trun_dir\n0\tcausal\t11\t" + sw.runs[0].dir +
                                        "\n1\tcausal\t12\t" + sw.runs[1].dir + "\n2\tbidir\t11\t" + sw.runs[2].dir +
                                        "\n3\tbidir\t12\t" + sw.runs[3].dir + "\n");
  // submit.sh: the pretraining without a dependency, the probe element-wise after it.
  const std::string submit = read(sd / "submit.sh");
  EXPECT_NE(submit.find("job_0=$(sbatch --parsable \"$@\" \"$DIR/pretrain.sbatch\")"), std::string::npos) << submit;
  EXPECT_NE(submit.find("job_1=$(sbatch --parsable --dependency=aftercorr:$job_0 --kill-on-invalid-dep=yes \"$@\" "
                        "\"$DIR/probe.sbatch\")"),
            std::string::npos)
      << submit;
  EXPECT_LT(submit.find("job_0="), submit.find("job_1="));
  EXPECT_TRUE((fs::status(sd / "submit.sh").permissions() & fs::perms::owner_exec) != fs::perms::none);
  // The scripts are valid bash.
  for (const char* f : {"pretrain.sbatch", "probe.sbatch", "submit.sh"})
    EXPECT_EQ(std::system(("bash -n " + (sd / f).string()).c_str()), 0) << f;
}

TEST(SweepReport, SampleStatistics) {
  const Stats s = summarize({1.0, 2.0, 4.0});
  EXPECT_EQ(s.n, 3);
  EXPECT_DOUBLE_EQ(s.mean, 7.0 / 3.0);
  EXPECT_NEAR(s.std, std::sqrt(7.0 / 3.0), 1e-12);  // ((4/3)^2 + (1/3)^2 + (5/3)^2) / (3 - 1) = 7/3
  EXPECT_TRUE(std::isnan(summarize({5.0}).std));
  EXPECT_EQ(summarize({5.0}).mean, 5.0);
  EXPECT_EQ(summarize({}).n, 0);
}

TEST(SweepReport, MetricsFromFabricatedRuns) {
  const fs::path dir = fresh_dir("report");
  std::string yaml = replace(kTwoStages, "  - {name: top1, stage: probe, key: top1}\n",
                             "  - {name: top1, stage: probe, key: top1}\n"
                             "  - {name: best_knn, stage: pretrain, key: knn_last_top1, mode: max}\n"
                             "  - {name: min_loss, stage: pretrain, kind: train, key: loss, mode: min}\n");
  yaml = replace(yaml, "seeds: [11, 12]", "seeds: [11, 12, 13]");
  const Sweep sw = expand(parse_in(dir, yaml), (dir / "out").string(), "/b");
  // causal: probe top-1 70, 72, 77 (last record counts); bidir: 60 and 61, its third seed's probe unfinished.
  const double top1[2][3] = {{70, 72, 77}, {60, 61, 99}};
  for (size_t i = 0; i < sw.runs.size(); ++i) {
    const nepa::sweep::Run& r = sw.runs[i];
    const int p = r.point == "causal" ? 0 : 1, k = static_cast<int>(i % 3);
    const fs::path pre = r.stages[0].dir, probe = r.stages[1].dir;
    write(pre / "metrics.jsonl",
          "{\"kind\":\"eval\",\"step\":0,\"knn_last_top1\":20}\n"
          "{\"kind\":\"train\",\"step\":1,\"loss\":-0.5}\n"
          "{\"kind\":\"train\",\"step\":2,\"loss\":" +
              std::to_string(-0.9 - 0.01 * k) +
              "}\n"
              "{\"kind\":\"train\",\"step\":3,\"loss\":null}\n"
              "{\"kind\":\"eval\",\"step\":3,\"knn_last_top1\":" +
              std::to_string(50 + k) +
              "}\n"
              "{\"kind\":\"eval\",\"step\":4,\"knn_last_to");  // cut short by a kill
    write(probe / "metrics.jsonl",
          "{\"kind\":\"eval\",\"step\":5,\"top1\":1}\n{\"kind\":\"train\",\"step\":6,"
          "\"top1\":1000}\n{\"kind\":\"eval\",\"step\":9,\"top1\":" +
              std::to_string(top1[p][k]) + ",\"top5\":99}\n");
    write(pre / kDoneMarker, "{}\n");
    write(pre / kAttempts, "{\"wall_s\": 30}\n{\"wall_s\": 90.5}\n");
    if (!(p == 1 && k == 2)) write(probe / kDoneMarker, "{}\n");
  }
  const auto rows = collect_results(sw);
  ASSERT_EQ(rows.size(), 6u);
  EXPECT_EQ(*rows[0].metrics.at("top1"), 70.0);
  EXPECT_EQ(*rows[2].metrics.at("top1"), 77.0);
  EXPECT_FALSE(rows[5].metrics.at("top1").has_value());  // unfinished: not reported, though its file says 99
  EXPECT_EQ(rows[5].unfinished, std::vector<std::string>{"probe"});
  EXPECT_EQ(*rows[1].metrics.at("best_knn"), 51.0);
  EXPECT_NEAR(*rows[2].metrics.at("min_loss"), -0.92, 1e-12);
  EXPECT_EQ(*rows[0].wall_s[0], 120.5);
  EXPECT_FALSE(rows[0].wall_s[1].has_value());

  write_sweep_json(sw);
  const Sweep back = read_sweep_json(sw.dir);
  ASSERT_EQ(back.runs.size(), 6u);
  EXPECT_EQ(back.runs[4].stages[1].command, sw.runs[4].stages[1].command);
  write_report(back);
  const std::string csv = read(dir / "out" / "results.csv");
  EXPECT_EQ(csv.substr(0, csv.find('\n')), "point,seed,top1,best_knn,min_loss,pretrain_wall_s,probe_wall_s,status");
  EXPECT_NE(csv.find("\ncausal,11,70,50,-0.9,120.5,,finished\n"), std::string::npos) << csv;
  EXPECT_NE(csv.find("\nbidir,13,,52,-0.92,120.5,,unfinished: probe\n"), std::string::npos) << csv;
  const std::string md = read(dir / "out" / "results.md");
  // causal 70, 72, 77: mean 73, sample std sqrt((9 + 1 + 16) / 2) = sqrt(13) = 3.606; bidir 60, 61: 60.5 +- 0.707.
  EXPECT_NE(md.find("| causal | 73.00 ± 3.61 | 3 | 70.00, 72.00, 77.00 | 76.80 |"), std::string::npos) << md;
  EXPECT_NE(md.find("| bidir | 60.50 ± 0.71 | 2 | 60.00, 61.00 | 73.60 |"), std::string::npos) << md;
  // A metric without paper figures has no paper column; small figures keep four significant digits.
  EXPECT_NE(md.find("| causal | -0.91 ± 0.01 | 3 |"), std::string::npos) << md;
  EXPECT_NE(md.find("11 of 12 stage runs finished"), std::string::npos);
}

namespace nepa::sweep {
namespace {

// A finished stage is skipped only while the file still gives its command line: after an edit (here the budget)
// or with an upstream stage unfinished, its old results would be reported as the new file's.
TEST(SweepResume, EditedStagesAreRefusedNotSkipped) {
  const fs::path dir = fresh_dir("edited");
  const Sweep sw = expand(parse_in(dir, kTwoStages), (dir / "out").string(), "/b");
  auto finish = [](const StageRun& s) {
    write(fs::path(s.dir) / kAttemptStamp, command_stamp(s.command));
    write(fs::path(s.dir) / kDoneMarker, "{}\n");
  };
  for (const auto& r : sw.runs)
    for (const auto& s : r.stages) finish(s);
  EXPECT_NO_THROW(check_finished_stages(sw));
  // The same file run by apps of another build tree: the same runs.
  EXPECT_NO_THROW(check_finished_stages(expand(parse_in(dir, kTwoStages), (dir / "out").string(), "/elsewhere/bin")));

  const Sweep edited =
      expand(parse_in(dir, replace(kTwoStages, "schedule.epochs: 1", "schedule.epochs: 3")), (dir / "out").string(),
             "/b");
  std::string msg;
  try {
    check_finished_stages(edited);
  } catch (const SweepError& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find("schedule.epochs=1' there, 'schedule.epochs=3' now"), std::string::npos) << msg;
  EXPECT_NE(msg.find(edited.runs[0].stages[0].dir), std::string::npos) << msg;
  EXPECT_NE(msg.find("remove " + edited.runs[0].dir), std::string::npos) << msg;

  // The pretraining redone (its marker gone) while the probe of the old one is still marked finished.
  fs::remove(fs::path(sw.runs[1].stages[0].dir) / kDoneMarker);
  msg.clear();
  try {
    check_finished_stages(sw);
  } catch (const SweepError& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find(sw.runs[1].stages[1].dir + " finished, but the stage it starts from (" + sw.runs[1].stages[0].dir +
                     ") is not"),
            std::string::npos)
      << msg;
}

// A readout stage added to the file after its siblings finished (both start from the pretraining) is just run: the
// finished fine-tuning does not depend on it.
TEST(SweepEdits, ANewSiblingStageDoesNotInvalidateTheFinishedOnes) {
  const fs::path dir = fresh_dir("sibling");
  const std::string src = NEPA_SOURCE_DIR;
  write(dir / "pre.yaml", "base: " + src + "/configs/pretrain/fmnist_tiny.yaml\n");
  write(dir / "probe.yaml", "base: " + src + "/configs/finetune/fmnist_tiny_linprobe.yaml\n");
  const std::string three = replace(kTwoStages, "points:\n",
                                    "  - name: finetune\n    app: nepa_finetune\n    config: probe.yaml\n"
                                    "    from: pretrain\npoints:\n");
  const Sweep sw = expand(parse_in(dir, three), (dir / "out").string(), "/b");
  ASSERT_EQ(sw.runs[0].stages.size(), 3u);
  ASSERT_EQ(sw.runs[0].stages[1].upstream, 0);
  ASSERT_EQ(sw.runs[0].stages[2].upstream, 0);
  for (const auto& r : sw.runs)
    for (size_t i = 0; i < r.stages.size(); ++i) {
      if (i == 1) continue;  // the middle readout is the new one: never run
      write(fs::path(r.stages[i].dir) / kAttemptStamp, command_stamp(r.stages[i].command));
      write(fs::path(r.stages[i].dir) / kDoneMarker, "{}\n");
    }
  EXPECT_NO_THROW(check_finished_stages(sw));
}

// A stage run finished by one sweep is reused by another whose stage has the same effective config (however its
// overrides spell it) and the same upstream: the stage directory becomes a link to it. A stage that differs in any
// key is not linked, nor is anything downstream of it; a link whose identity is no longer the stage's is refused.
TEST(SweepShare, AFinishedStageIsReusedByAnotherSweepWithTheSameEffectiveConfig) {
  const fs::path dir = fresh_dir("share");
  const std::string src = NEPA_SOURCE_DIR;
  write(dir / "pre.yaml", "base: " + src + "/configs/pretrain/fmnist_tiny.yaml\n");
  write(dir / "probe.yaml", "base: " + src + "/configs/finetune/fmnist_tiny_linprobe.yaml\n");
  Sweep a = expand(parse_in(dir, kTwoStages), (dir / "sweeps" / "a").string(), "/b");
  check_configs(a);
  for (const auto& r : a.runs)
    for (const auto& s : r.stages) {
      write(fs::path(s.dir) / kAttemptStamp, command_stamp(s.command));
      write(fs::path(s.dir) / kDoneMarker, "{}\n");
    }
  register_finished(a);
  EXPECT_EQ(shared_root(a), (dir / "sweeps" / ".shared").string());

  // B restates A's causal point with a default spelled out, and has a point that differs from A's bidir in one key.
  std::string yaml = kTwoStages;
  yaml = replace(yaml, "name: demo", "name: b");
  yaml = replace(yaml, "pretrain: {model.is_causal: true}", "pretrain: {model.is_causal: true, objective.stop_grad: true}");
  yaml = replace(yaml, "      all: {data.crop_scale: [0.8, 1.0]}\n", "");
  Sweep b = expand(parse_in(dir, yaml), (dir / "sweeps" / "b").string(), "/b");
  check_configs(b);
  EXPECT_EQ(link_shared(b), 4);  // causal: pretrain and probe, seeds 11 and 12
  for (size_t i = 0; i < b.runs.size(); ++i)
    for (size_t k = 0; k < 2; ++k) {
      const StageRun& s = b.runs[i].stages[k];
      if (b.runs[i].point == "causal") {
        ASSERT_TRUE(fs::is_symlink(s.dir)) << s.dir;
        EXPECT_EQ(fs::read_symlink(s.dir).string(), a.runs[i].stages[k].dir) << "the same point and seed";
        EXPECT_EQ(s.identity, a.runs[i].stages[k].identity);
      } else {
        EXPECT_FALSE(fs::exists(s.dir)) << s.dir;
        EXPECT_NE(s.identity, a.runs[i].stages[k].identity);
      }
    }
  EXPECT_NE(b.runs[0].stages[0].identity, b.runs[1].stages[0].identity) << "the seed is part of the config";
  EXPECT_NO_THROW(check_finished_stages(b));
  EXPECT_EQ(link_shared(b), 0) << "linking twice changes nothing";

  write(fs::path(a.runs[0].stages[0].dir) / kIdentityFile, "0123456789abcdef");
  std::string msg;
  try {
    check_finished_stages(b);
  } catch (const SweepError& e) {
    msg = e.what();
  }
  EXPECT_NE(msg.find(b.runs[0].stages[0].dir + " is linked to " + a.runs[0].stages[0].dir), std::string::npos) << msg;
}

}  // namespace
}  // namespace nepa::sweep
