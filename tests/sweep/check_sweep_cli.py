"""End-to-end checks of nepa_sweep on a tiny synthetic sweep (run by ctest; ~30 s on 2 cores).

A 2-point (causal / bidirectional) x 2-seed sweep of nepa_pretrain (a few hundred steps, checkpoints every 50)
and a linear probe (nepa_finetune --init <pretraining>/final):
1. --dry-run lists the 8 stage runs and their command lines and starts nothing.
2. `run`, stopped by SIGTERM while the second run's pretraining trains: exit 143, that stage checkpointed and
   is not marked finished; the first run's two stages are.
3. `run` again, and the bidirectional seed's pretraining child is killed (SIGKILL) mid-run: that stage is reported
   failed, its probe blocked, exit 1; the other runs keep going and finish.
4. `run` a third time: both interrupted stages continue from their checkpoints (their logs say resumed, their
   progress does not start at step 1), nothing finished is rerun (files and mtimes untouched), exit 0.
5. `report`: results.csv (a row per run, every metric), results.md, PNG plots; with a missing Python the tables
   are written and the exit is 1 with one line.
5b. a second sweep of the same stage runs (its overrides spelled differently) trains nothing: every stage links to
   the first sweep's finished run, and its report gives the same figures.
6. `slurm`: the task command lines are the local ones; a 2-process stage runs as two ranks; a bad sweep file
   exits 2 naming its line.

usage: check_sweep_cli.py <nepa_sweep> <source dir> <work dir>
"""
import csv
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time

EXE, SRC, WORK = sys.argv[1], sys.argv[2], sys.argv[3]

MODEL = """
model:
  image_size: 16
  patch_size: 4
  hidden_size: 32
  num_hidden_layers: 2
  num_attention_heads: 2
  intermediate_size: 64
data:
  dataset: synthetic
  image_size: 16
  num_workers: 1
  synthetic_size: 256
train:
  total_batch: 16
  micro_batch: 16
  threads: 1
log:
  log_every: 10
"""

PRETRAIN = f"base: {SRC}/configs/pretrain/fmnist_tiny.yaml\n" + MODEL + """
schedule:
  epochs: 30
  warmup_fraction: 0.05
eval:
  knn_k: 5
  knn_train_samples: 0
"""
PROBE = f"base: {SRC}/configs/finetune/fmnist_tiny_linprobe.yaml\n" + MODEL + """
schedule:
  epochs: 1
"""

SWEEP = """name: tiny
paper_note: ImageNet-1k top-1 after fine-tuning
stages:
  - name: pretrain
    app: nepa_pretrain
    config: pre.yaml
    set: {train.checkpoint_every: 50}
  - name: probe
    app: nepa_finetune
    config: probe.yaml
    from: pretrain
points:
  - name: causal
    paper: {probe_top1: 76.8}
  - name: bidir
    set:
      all: {model.is_causal: false}
    paper: {probe_top1: 73.6}
seeds: [1, 2]
metrics:
  - {name: knn_last, stage: pretrain, key: knn_last_top1}
  - {name: probe_top1, stage: probe, key: top1, label: linear probe top-1}
"""


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def run(args, expect, timeout=120):
    r = subprocess.run([EXE] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    check(r.returncode == expect, f"nepa_sweep {' '.join(args)} exited {r.returncode}, expected {expect}:\n{r.stdout[-4000:]}")
    return r.stdout


def stage(point, seed, name):
    return os.path.join(OUT, point, f"seed{seed}", name)


def done(d):
    return os.path.exists(os.path.join(d, "sweep_done.json"))


def wait_for(path, proc, timeout=60):
    t0 = time.time()
    while not os.path.exists(path):
        check(proc.poll() is None, f"nepa_sweep ended ({proc.returncode}) before {path} appeared")
        check(time.time() - t0 < timeout, f"{path} did not appear in {timeout} s")
        time.sleep(0.02)


def child_pid(run_dir):
    """The pid of the app whose --output-dir is run_dir (exact argument match)."""
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                argv = f.read().split(b"\0")
        except OSError:
            continue
        if b"--output-dir" in argv and argv[argv.index(b"--output-dir") + 1] == run_dir.encode():
            return int(pid)
    return None


def snapshot(d):
    """mtime of every file under d: a rerun stage would rewrite them."""
    out = {}
    for root, _, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            out[p] = os.stat(p).st_mtime_ns
    return out


def attempts(d):
    with open(os.path.join(d, "stage.log")) as f:
        return f.read().split("==== nepa_sweep ")[1:]


def first_progress_step(text):
    m = re.search(r"step (\d+)/\d+ ep", text)
    check(m, "no progress line in:\n" + text[-2000:])
    return int(m.group(1))


shutil.rmtree(WORK, ignore_errors=True)
os.makedirs(WORK)
OUT = os.path.join(WORK, "out")
for name, text in (("pre.yaml", PRETRAIN), ("probe.yaml", PROBE), ("sweep.yaml", SWEEP)):
    with open(os.path.join(WORK, name), "w") as f:
        f.write(text)
SWEEP_FILE = os.path.join(WORK, "sweep.yaml")
t_start = time.time()

# 1. dry run
text = run(["--dry-run", SWEEP_FILE, "--out", OUT], 0)
commands = [l for l in text.splitlines() if not l.startswith("#")]
check(len(commands) == 8, f"dry run: {len(commands)} command lines, expected 8:\n{text}")
check(not os.path.exists(OUT), "the dry run created the sweep directory")
probe_cmd = shlex.split(commands[7])
check(probe_cmd[probe_cmd.index("--init") + 1] == stage("bidir", 2, "pretrain") + "/final", commands[7])
check("model.is_causal=false" in probe_cmd and "train.seed=2" in probe_cmd, commands[7])

# 2. SIGTERM to nepa_sweep while causal/seed2's pretraining trains
proc = subprocess.Popen([EXE, "run", SWEEP_FILE, "--out", OUT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True)
wait_for(os.path.join(stage("causal", 2, "pretrain"), "checkpoints", "latest"), proc)
proc.send_signal(signal.SIGTERM)
out, _ = proc.communicate(timeout=60)
check(proc.returncode == 128 + signal.SIGTERM, f"stopped sweep exited {proc.returncode}:\n{out}")
check(done(stage("causal", 1, "pretrain")) and done(stage("causal", 1, "probe")), "run 0 not finished:\n" + out)
check(not done(stage("causal", 2, "pretrain")), "the stopped stage is marked finished")
check("stopping after step" in attempts(stage("causal", 2, "pretrain"))[-1], "the stopped stage did not checkpoint")
finished_run = snapshot(os.path.join(OUT, "causal", "seed1"))

# 3. rerun; SIGKILL the bidirectional seed-1 pretraining once it has a checkpoint
proc = subprocess.Popen([EXE, "run", SWEEP_FILE, "--out", OUT], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                        text=True)
victim_dir = stage("bidir", 1, "pretrain")
wait_for(os.path.join(victim_dir, "checkpoints", "latest"), proc)
pid = child_pid(victim_dir)
check(pid is not None, "no process for " + victim_dir)
os.kill(pid, signal.SIGKILL)
out, _ = proc.communicate(timeout=120)
check(proc.returncode == 1, f"sweep with a killed stage exited {proc.returncode}:\n{out}")
check("failed:  bidir/seed1/pretrain: killed by signal 9" in out, "failure not reported:\n" + out)
check("blocked: bidir/seed1/probe" in out, "blocked stage not reported:\n" + out)
check(done(stage("bidir", 2, "probe")), "the other point did not keep going:\n" + out)
check(not os.path.exists(stage("bidir", 1, "probe")), "a blocked stage was started")
resumed = attempts(stage("causal", 2, "pretrain"))
check(len(resumed) == 2 and "resumed from" in resumed[1], "causal/seed2 pretraining was not resumed")
check(first_progress_step(resumed[1]) > 10, "causal/seed2 pretraining restarted at step 1")

# 4. third run finishes the sweep without redoing finished work
out = run(["run", SWEEP_FILE, "--out", OUT], 0)
check("6 finished before" in out, "finished stages were not skipped:\n" + out)
check(snapshot(os.path.join(OUT, "causal", "seed1")) == finished_run, "a finished run's files changed")
killed = attempts(victim_dir)
check(len(killed) == 2 and "resumed from" in killed[1], "the killed stage was not resumed")
check(first_progress_step(killed[1]) > 10, "the killed stage restarted at step 1")
for p in ("causal", "bidir"):
    for s in (1, 2):
        for st in ("pretrain", "probe"):
            check(done(stage(p, s, st)), f"{p}/seed{s}/{st} not finished")
check(len(attempts(stage("causal", 1, "pretrain"))) == 1, "a finished stage ran twice")

# 5. report
out = run(["report", OUT], 0)
with open(os.path.join(OUT, "results.csv")) as f:
    rows = list(csv.DictReader(f))
check(len(rows) == 4, f"{len(rows)} rows in results.csv")
for r in rows:
    check(r["status"] == "finished" and r["knn_last"] and r["probe_top1"] and float(r["pretrain_wall_s"]) > 0, str(r))
with open(os.path.join(stage("causal", 1, "probe"), "metrics.jsonl")) as f:
    last_top1 = [json.loads(l)["top1"] for l in f if '"kind":"eval"' in l][-1]
check(abs(float(rows[0]["probe_top1"]) - last_top1) < 1e-9, f"{rows[0]['probe_top1']} vs {last_top1}")
md = open(os.path.join(OUT, "results.md")).read()
check("| causal |" in md and "| 76.80 |" in md and "paper (ImageNet)" in md, md)
for png in ("curves_pretrain.png", "metrics.png"):
    with open(os.path.join(OUT, png), "rb") as f:
        check(f.read(8) == b"\x89PNG\r\n\x1a\n", png + " is not a PNG")
os.remove(os.path.join(OUT, "results.md"))
r = subprocess.run([EXE, "report", OUT, "--python", "/nonexistent/python"], capture_output=True, text=True)
check(r.returncode == 1 and os.path.exists(os.path.join(OUT, "results.md")), f"report without Python: {r.returncode}")
check(len(r.stderr.strip().splitlines()) == 1 and "no Python at /nonexistent/python" in r.stderr, r.stderr)

# 5b. Another sweep with the same stages (another name, the same effective configs) trains nothing: every stage
# run links to the finished one of the first sweep, and its report gives the same figures.
with open(os.path.join(WORK, "again.yaml"), "w") as f:
    f.write(SWEEP.replace("name: tiny", "name: again").replace("      all: {model.is_causal: false}\n",
                                                                  "      all: {model.is_causal: false}\n"
                                                                  "      pretrain: {objective.stop_grad: true}\n"))
AGAIN = os.path.join(WORK, "again")
out = run(["run", os.path.join(WORK, "again.yaml"), "--out", AGAIN], 0)
check("8 stage run(s) reused from other sweeps" in out and "start " not in out, "not every stage was reused:\n" + out)
for point in ("causal", "bidir"):
    for seed in (1, 2):
        for st in ("pretrain", "probe"):
            d = os.path.join(AGAIN, point, f"seed{seed}", st)
            check(os.path.islink(d) and os.path.realpath(d) == os.path.realpath(stage(point, seed, st)),
                  f"{d} is not a link to the first sweep's run")
run(["report", AGAIN, "--no-plots"], 0)
with open(os.path.join(AGAIN, "results.csv")) as f:
    again = list(csv.DictReader(f))
check([r["probe_top1"] for r in again] == [r["probe_top1"] for r in rows], "the reused runs report other figures")

# 6. SLURM set: task i of the probe array runs run i's local command line
run(["slurm", SWEEP_FILE, "--out", OUT], 0)
sbatch = open(os.path.join(OUT, "slurm", "probe.sbatch")).read()
check("#SBATCH --array=0-3" in sbatch, sbatch)
task3 = re.search(r"\n  3\) .*\n     CMD=\((.*)\) ;;\n", sbatch)
check(task3 and shlex.split(task3.group(1)) == probe_cmd, "SLURM task 3 differs from the local command")
check(subprocess.run(["bash", "-n", os.path.join(OUT, "slurm", "submit.sh")]).returncode == 0, "submit.sh: bad bash")

# The array tasks themselves, under a stand-in srun that runs the command as one task: task 0 of each stage of a
# fresh sweep directory finishes its stage and leaves the files a local run leaves (so `run` skips it).
OUT2 = os.path.join(WORK, "slurm_out")
run(["slurm", SWEEP_FILE, "--out", OUT2], 0)
fake_bin = os.path.join(WORK, "fake_bin")
os.makedirs(fake_bin)
with open(os.path.join(fake_bin, "srun"), "w") as f:
    f.write('#!/usr/bin/env bash\nwhile [[ "$1" == --* ]]; do shift; done\nexec "$@"\n')
os.chmod(os.path.join(fake_bin, "srun"), 0o755)
env = dict(os.environ, PATH=fake_bin + os.pathsep + os.environ["PATH"], SLURM_ARRAY_TASK_ID="0", SLURM_JOB_ID="7",
           SLURM_ARRAY_JOB_ID="7")
for st in ("pretrain", "probe"):
    r = subprocess.run(["bash", os.path.join(OUT2, "slurm", st + ".sbatch")], env=env, capture_output=True, text=True)
    check(r.returncode == 0, f"{st}.sbatch task 0 exited {r.returncode}: {r.stderr[-2000:]}")
    d = os.path.join(OUT2, "causal", "seed1", st)
    check(done(d), f"{st}.sbatch task 0 left no sweep_done.json")
    with open(os.path.join(d, "sweep_attempts.jsonl")) as f:
        check(json.loads(f.readline())["outcome"] == "finished", "slurm attempt not recorded")
text = run(["run", "--dry-run", SWEEP_FILE, "--out", OUT2], 0)
check(text.count("[finished: skipped]") == 2, "the SLURM tasks' stages are not seen as finished:\n" + text)

# A 2-process stage runs as two ranks of one job.
with open(os.path.join(WORK, "dp.yaml"), "w") as f:
    f.write(SWEEP.replace("    set: {train.checkpoint_every: 50}\n",
                          "    set: {train.checkpoint_every: 50, schedule.epochs: 2, train.micro_batch: 8}\n"
                          "    processes: 2\n")
            .replace("name: tiny", "name: dp").replace("seeds: [1, 2]", "seeds: [3]"))
out = run(["run", os.path.join(WORK, "dp.yaml"), "--out", os.path.join(WORK, "dp"), "--jobs", "2"], 0)
log = open(os.path.join(WORK, "dp", "causal", "seed3", "pretrain", "stage.log")).read()
check("data parallel: 2 processes" in log, "the 2-process stage did not run as 2 ranks:\n" + log[-2000:])
# With --jobs 2 every stage is bound to its slots' share of the cores, and an app left to choose its threads
# (train.threads 0) sizes its pool to that share: the probe, one process on one slot, gets half of them.
cores = len(os.sched_getaffinity(0))
if cores >= 2:
    with open(os.path.join(WORK, "dp_threads.yaml"), "w") as f:
        f.write(open(os.path.join(WORK, "dp.yaml")).read().replace(
            "    from: pretrain\n", "    from: pretrain\n    set: {train.threads: 0}\n"))
    run(["run", os.path.join(WORK, "dp_threads.yaml"), "--out", os.path.join(WORK, "dp_threads"), "--jobs", "2"], 0)
    log = open(os.path.join(WORK, "dp_threads", "causal", "seed3", "probe", "stage.log")).read()
    check(f", {cores // 2} threads" in log, f"the probe was not bound to {cores // 2} of {cores} cores:\n" + log[-2000:])

# A bad sweep file: exit 2, one line naming the file and line.
with open(os.path.join(WORK, "bad.yaml"), "w") as f:
    f.write(SWEEP.replace("    from: pretrain\n", "    from: pretrain\n    form_ema: true\n"))
r = subprocess.run([EXE, "run", os.path.join(WORK, "bad.yaml")], capture_output=True, text=True)
check(r.returncode == 2 and r.stderr.strip() == f"sweep error: {WORK}/bad.yaml:12: stage: unknown key 'form_ema' "
      "(known: app, config, from, from_ema, name, processes, sbatch, set)", r.stderr)

print(f"sweep_cli: all checks passed in {time.time() - t_start:.0f} s")
