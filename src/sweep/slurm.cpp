// The SLURM side of a sweep. SLURM schedules; the scripts only run the same command lines as `nepa_sweep run`,
// keep the same files in each run directory (stage.log, sweep_attempts.jsonl, sweep_done.json) so that `report`
// and a local `run` see the same state, and requeue on preemption as scripts/slurm/pretrain_vitb.sbatch does.
#include "nepa/sweep/slurm.h"

#include <fmt/format.h>

#include <filesystem>

#include "nepa/io/atomic_file.h"

namespace fs = std::filesystem;

namespace nepa::sweep {
namespace {

std::string stage_script(const Sweep& sweep, size_t stage, const std::string& log_dir) {
  const StageSpec& spec = sweep.spec.stages[stage];
  std::string s = fmt::format(
      "#!/usr/bin/env bash\n"
      "# Sweep {}, stage {} ({}): one array task per run (point x seed); task i is row i of tasks.tsv in every\n"
      "# stage. Written by `nepa_sweep slurm {}`; each task runs the command line `nepa_sweep run` runs locally.\n"
      "#SBATCH --job-name={}-{}\n"
      "#SBATCH --array=0-{}\n"
      "#SBATCH --ntasks={}\n"
      "#SBATCH --output={}/{}-%A_%a.out\n"
      "#SBATCH --signal=B:USR1@300\n"
      "#SBATCH --requeue\n",
      sweep.spec.name, spec.name, spec.app, sweep.spec.file, sweep.spec.name, spec.name, sweep.runs.size() - 1,
      spec.processes, log_dir, spec.name);
  for (const auto& o : sweep.spec.sbatch) s += "#SBATCH " + o + "\n";
  for (const auto& o : spec.sbatch) s += "#SBATCH " + o + "\n";
  s += "set -uo pipefail\ncase \"$SLURM_ARRAY_TASK_ID\" in\n";
  for (size_t i = 0; i < sweep.runs.size(); ++i) {
    const Run& run = sweep.runs[i];
    const StageRun& st = run.stages[stage];
    s += fmt::format("  {}) POINT={} SEED={} RUN={}\n     CMD=({}) ;;\n", i, shell_quote(run.point), run.seed,
                     shell_quote(st.dir), shell_command(st.command));
  }
  s += "  *) echo \"no task $SLURM_ARRAY_TASK_ID in this array\" >&2; exit 2 ;;\nesac\n";
  s += fmt::format(
      "if [ -e \"$RUN/{done}\" ]; then echo \"finished before: $RUN\"; exit 0; fi\n"
      "mkdir -p \"$RUN\"\n"
      "# One rendezvous port per job, so that two jobs sharing a node do not meet each other. The ranks are srun's\n"
      "# tasks (SLURM_PROCID / SLURM_NTASKS; the apps meet at the first node of the allocation).\n"
      "export MASTER_PORT=$((20000 + SLURM_JOB_ID % 20000))\n"
      "printf '%s\\n' \"${{CMD[@]}}\" > \"$RUN/{stamp}\"  # when (mtime) and with which command line\n"
      "echo \"==== nepa_sweep slurm job ${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}} $(date +%FT%T): ${{CMD[*]}}\" "
      ">> \"$RUN/{log}\"\n"
      "START=$SECONDS\n"
      "attempt() {{ printf '{{\"ended\": \"%s\", \"wall_s\": %s, \"outcome\": \"%s\", "
      "\"status\": \"exit code %s\"}}\\n' "
      "\"$(date +%FT%T)\" \"$((SECONDS - START))\" \"$1\" \"$2\" >> \"$RUN/{attempts}\"; }}\n"
      "# SIGUSR1 (300 s before the time limit, --signal) reaches every task through srun: the app checkpoints and\n"
      "# exits 0, and the requeued task continues with --resume auto.\n"
      "trap 'kill -USR1 \"$SRUN_PID\"; wait \"$SRUN_PID\"; attempt requeued $?; "
      "scontrol requeue \"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\"; exit 0' USR1\n"
      "srun --kill-on-bad-exit=1 \"${{CMD[@]}}\" >> \"$RUN/{log}\" 2>&1 &\n"
      "SRUN_PID=$!\n"
      "wait \"$SRUN_PID\"\n"
      "rc=$?\n"
      "# Finished: exit 0 and the final export written by this attempt (an app stopped by a signal exits 0 too).\n"
      "if [ \"$rc\" -eq 0 ] && [ \"$RUN/final/model.safetensors\" -nt \"$RUN/{stamp}\" ]; then\n"
      "  attempt finished 0\n"
      "  printf '{{\"point\": \"%s\", \"seed\": %s, \"stage\": \"{stage}\", \"finished\": \"%s\", \"wall_s\": %s, "
      "\"slurm_job\": \"%s\"}}\\n' \"$POINT\" \"$SEED\" \"$(date +%FT%T)\" \"$((SECONDS - START))\" "
      "\"${{SLURM_ARRAY_JOB_ID}}_${{SLURM_ARRAY_TASK_ID}}\" > \"$RUN/{done}.tmp\"\n"
      "  mv \"$RUN/{done}.tmp\" \"$RUN/{done}\"\n"
      "  exit 0\n"
      "fi\n"
      "attempt \"$([ \"$rc\" -eq 0 ] && echo stopped || echo failed)\" \"$rc\"\n"
      "echo \"stage did not finish (exit code $rc): $RUN/{log}\" >&2\n"
      "exit $((rc ? rc : 1))\n",
      fmt::arg("done", kDoneMarker), fmt::arg("stamp", kAttemptStamp), fmt::arg("log", kStageLog),
      fmt::arg("attempts", kAttempts), fmt::arg("stage", spec.name));
  return s;
}

}  // namespace

std::vector<std::string> write_slurm(const Sweep& sweep, const std::string& out_dir) {
  const fs::path dir = fs::absolute(out_dir).lexically_normal();
  const fs::path logs = dir / "logs";
  fs::create_directories(logs);
  std::vector<std::string> written;
  auto write = [&](const std::string& name, const std::string& text, bool executable) {
    const fs::path p = dir / name;
    write_text_atomic(p.string(), text);
    if (executable)
      fs::permissions(p, fs::perms::owner_exec | fs::perms::group_exec | fs::perms::others_exec, fs::perm_options::add);
    written.push_back(p.string());
  };

  std::string table = "index\tpoint\tseed\trun_dir\n";
  for (size_t i = 0; i < sweep.runs.size(); ++i)
    table += fmt::format("{}\t{}\t{}\t{}\n", i, sweep.runs[i].point, sweep.runs[i].seed, sweep.runs[i].dir);
  write("tasks.tsv", table, false);

  std::string submit = fmt::format(
      "#!/usr/bin/env bash\n"
      "# Submits sweep {} to SLURM, stage by stage. A stage that starts from another's export depends on it with\n"
      "# --dependency=aftercorr: task i of its array starts once task i of the upstream array finished successfully\n"
      "# (SLURM's element-wise afterok for job arrays: a run's fine-tune waits for that run's pretraining only);\n"
      "# --kill-on-invalid-dep=yes cancels a task whose upstream task failed instead of leaving it pending.\n"
      "# Extra arguments go to every sbatch, e.g. bash submit.sh --account=proj --partition=gpu\n"
      "set -euo pipefail\n"
      "DIR=\"$(cd \"$(dirname \"${{BASH_SOURCE[0]}}\")\" && pwd)\"\n"
      "mkdir -p {}\n",
      sweep.spec.name, shell_quote(logs.string()));
  for (size_t s = 0; s < sweep.spec.stages.size(); ++s) {
    const StageSpec& spec = sweep.spec.stages[s];
    write(spec.name + ".sbatch", stage_script(sweep, s, logs.string()), true);
    std::string dep;
    if (!spec.from.empty())
      for (size_t u = 0; u < s; ++u)
        if (sweep.spec.stages[u].name == spec.from)
          dep = fmt::format(" --dependency=aftercorr:$job_{} --kill-on-invalid-dep=yes", u);
    submit += fmt::format("job_{0}=$(sbatch --parsable{1} \"$@\" \"$DIR/{2}.sbatch\")\njob_{0}=${{job_{0}%%;*}}\n"
                          "echo \"{2}: job $job_{0}\"\n",
                          s, dep, spec.name);
  }
  write("submit.sh", submit, true);
  return written;
}

}  // namespace nepa::sweep
