"""Multi-process nepa_pretrain on Gloo over loopback (run by ctest).

1. torchrun --no-python with 2 processes x micro-batch 8 equals 1 process x micro-batch 16 on the same samples
   (NEPA; AIM with its pixel head and prefix-causal mask; I-JEPA with its predictor and momentum target encoder,
   which has no gradient and is not all-reduced, yet must stay equal on every rank):
   per-step losses, final weights and their EMA within 1e-6; the same with gradient accumulation (total batch 32).
   Gradient clipping is on at a norm every step exceeds, so this also shows that the ranks clip the averaged
   gradient (clipping each rank's own gradient would give other weights).
   The model draws nothing at random here (no drop-path, no RoPE rescaling): each rank draws from its own seed
   (train.seed + rank), so with randomness one process could not equal two.
2. A 2-process run with drop-path and RoPE rescaling, stopped by SIGTERM (delivered to both ranks, as torchrun
   and SLURM do), exits 0 with a checkpoint holding each rank's own generator state; resuming it with 2
   processes reproduces the uninterrupted 2-process loss curve step for step (each rank must get its own
   generator back). Without randomness, a 2-process checkpoint resumed by 1 process (2 accumulated
   micro-batches) continues at the same samples (losses of the next 20 steps within 1e-5 of one process run
   throughout).
3. A rank killed with SIGKILL mid-run (rank 1, then rank 0, whose process serves the store) ends the other with
   a non-zero exit and one line naming both ranks and their hosts, without LibTorch's stack traces.
4. A rank that fails with an error (its dataset is missing) is named, with its error, by the other rank.

usage: check_ddp_cli.py <nepa_pretrain> <work dir>
Without torchrun next to this Python (Torch_DIR builds), part 1 starts the ranks itself with the same variables.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from safetensors.numpy import load_file

from ranks import finish, free_port, spawn_ranks

CONFIG = """
model:
  image_size: 16
  patch_size: 4
  num_channels: 3
  hidden_size: 32
  num_hidden_layers: 2
  num_attention_heads: 2
  intermediate_size: 64
  drop_path_prob: 0.0
  pos_embed_rescale: null
data:
  dataset: synthetic
  synthetic_size: 256
  image_size: 16
  num_workers: 1
optim:
  base_lr: 1.0e-3
  grad_clip: 0.05
train:
  total_batch: 16
  micro_batch: 16
  threads: 1
  checkpoint_every: 1000
schedule:
  max_steps: 12
  warmup_fraction: 0.2
log:
  log_every: 1
dist:
  timeout_s: 60
  bucket_mb: 0.01
"""


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def train_rows(run):
    return [json.loads(l) for l in open(os.path.join(run, "metrics.jsonl")) if '"kind":"train"' in l]


def losses(run):
    return [r["loss"] for r in train_rows(run)]


def single(exe, cfg, run, *sets):
    args = [exe, "--config", cfg, "--output-dir", run] + [a for s in sets for a in ("--set", s)]
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    check(r.returncode == 0, f"single-process run failed:\n{r.stdout}")


def compare(a, b, what, clip=0.05, exports=("final", "final_ema")):
    la, lb = losses(a), losses(b)
    check(len(la) == len(lb) and len(la) > 0, f"{what}: {len(la)} vs {len(lb)} logged steps")
    dl = max(abs(x - y) for x, y in zip(la, lb))
    gnorms = [r["grad_norm"] for r in train_rows(a)]
    check(min(gnorms) > clip, f"{what}: clipping at {clip} was not active on every step (pre-clip norms {gnorms})")
    dw = 0.0
    for export in exports:
        wa = load_file(os.path.join(a, export, "model.safetensors"))
        wb = load_file(os.path.join(b, export, "model.safetensors"))
        check(wa.keys() == wb.keys(), f"{what}: different tensors in {export}")
        dw = max([dw] + [float(np.abs(wa[k] - wb[k]).max()) for k in wa])
    print(f"{what}: {len(la)} steps, final loss {la[-1]:.6f} vs {lb[-1]:.6f}, max |loss diff| {dl:.2e}, "
          f"max |weight diff| {dw:.2e} ({', '.join(exports)}), pre-clip grad norm {min(gnorms):.4g}..{max(gnorms):.4g}")
    check(dl <= 1e-6 and dw <= 1e-6, f"{what}: 2 processes differ from 1 process")

AIM_SETS = ["objective.name=aim", "objective.aim.prefix_min=6", "objective.aim.prefix_max=6",
            "objective.aim.head_blocks=1", "objective.aim.head_width=16", "model.use_cls_token=false",
            "model.use_sincos_pos_embed=true", "model.use_rope=false", "model.qk_norm=false", "model.is_causal=false"]


# I-JEPA's masks come from each rank's own generator; they are made the same everywhere by blocks that have one
# place only (a block spans at most grid - 1 rows and columns and starts before the last one: on the 4 x 4 grid
# every block is the 3 x 3 at the corner), the context overlapping the target. Its export (final/) is the momentum
# target encoder, updated from the averaged step on every rank; there is no weight EMA (train.ema must be false).
# Its gradients are smaller than the others': clipping is checked at a lower norm.
IJEPA_SETS = ["objective.name=ijepa", "objective.ijepa.num_pred_masks=1", "objective.ijepa.pred_mask_scale=[1.0, 1.0]",
              "objective.ijepa.enc_mask_scale=[1.0, 1.0]", "objective.ijepa.aspect_ratio=[1.0, 1.0]",
              "objective.ijepa.allow_overlap=true", "objective.ijepa.min_keep=4", "objective.ijepa.predictor_depth=1",
              "objective.ijepa.predictor_width=16", "objective.ijepa.ema=[0.9, 0.99]", "model.use_cls_token=false",
              "model.use_sincos_pos_embed=true", "model.use_rope=false", "model.qk_norm=false", "model.is_causal=false",
              "train.ema=false", "optim.grad_clip=0.002"]


def one_vs_two(exe, cfg, work, what, total, micro2, sets, torchrun, **compare_args):
    """1 process x micro-batch 2 * micro2 vs 2 processes x micro2 at train.total_batch `total`."""
    tag = what.replace(" ", "_").replace(",", "")
    one, two = os.path.join(work, f"one_{tag}"), os.path.join(work, f"two_{tag}")
    single(exe, cfg, one, f"train.total_batch={total}", f"train.micro_batch={2 * micro2}", *sets)
    args = ["--config", cfg, "--output-dir", two, "--set", f"train.total_batch={total}",
            "--set", f"train.micro_batch={micro2}"] + [a for s in sets for a in ("--set", s)]
    if os.path.exists(torchrun):
        r = subprocess.run([torchrun, "--no-python", "--nproc_per_node", "2", "--master_port", str(free_port()),
                            exe] + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
        check(r.returncode == 0, f"torchrun run failed:\n{r.stdout}")
        out = r.stdout
    else:
        codes, outs = finish(spawn_ranks(exe, args, 2), 300)
        check(codes == [0, 0], f"2-process run failed: {codes}\n{outs}")
        out = outs[0]
    check("data parallel: 2 processes (gloo)" in out, "no data-parallel line:\n" + out)
    compare(one, two, f"{what}: 1 x {2 * micro2} vs 2 x {micro2}", **compare_args)


def stop_2proc(exe, cfg, run, sets):
    """Starts 2 ranks, sends both SIGTERM after 20 logged steps; returns the step they stopped at."""
    procs = spawn_ranks(exe, ["--config", cfg, "--output-dir", run] + sets, 2)
    metrics = os.path.join(run, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 20):
        time.sleep(0.01)
    for p in procs:
        p.send_signal(signal.SIGTERM)
    codes, outs = finish(procs, 120)
    check(codes == [0, 0], f"SIGTERM: exit codes {codes}\n{outs[0]}")
    stopped_at = len(losses(run))
    check(20 <= stopped_at < 300, f"stopped at step {stopped_at}")
    check(os.path.exists(os.path.join(run, "checkpoints", f"step_{stopped_at:08d}.safetensors")),
          f"no checkpoint for step {stopped_at}")
    return stopped_at


def main():
    exe, work = sys.argv[1], sys.argv[2]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    cfg = os.path.join(work, "ddp.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")

    # ---- 1. 2 processes = 1 process with the whole batch, with and without accumulation -------------------
    for total, micro2 in ((16, 8), (32, 8)):
        one_vs_two(exe, cfg, work, f"total batch {total}", total, micro2, [], torchrun)

    # ---- 1b. the same for AIM: its pixel head's gradients travel in the buckets, the prefix-causal mask is on.
    # The prefix is fixed (prefix_min = prefix_max) because each rank draws its own, and the loss is a mean over
    # the predicted patches of each rank's images: only with equal counts does the average of the ranks' means
    # equal the mean over the whole batch (as in any data-parallel AIM, the release's included).
    one_vs_two(exe, cfg, work, "AIM, total batch 16", 16, 8, AIM_SETS, torchrun)
    # ---- 1c. I-JEPA: the context encoder's and predictor's gradients averaged, the target encoder kept equal.
    one_vs_two(exe, cfg, work, "I-JEPA, total batch 16", 16, 8, IJEPA_SETS, torchrun, clip=0.002, exports=("final",))

    # ---- 2. SIGTERM to both ranks, then resume with 2 processes (model randomness on) ---------------------
    long_sets = ["--set", "schedule.max_steps=300", "--set", "train.micro_batch=8"]
    random_sets = long_sets + ["--set", "model.drop_path_prob=0.2", "--set", "model.pos_embed_rescale=2.0"]
    ref = os.path.join(work, "ref_2proc")
    codes, outs = finish(spawn_ranks(exe, ["--config", cfg, "--output-dir", ref] + random_sets, 2), 300)
    check(codes == [0, 0], f"reference 2-process run failed: {codes}\n{outs[0]}")
    run = os.path.join(work, "stopped_2proc")
    stopped_at = stop_2proc(exe, cfg, run, random_sets)
    state = load_file(os.path.join(run, "checkpoints", f"step_{stopped_at:08d}.safetensors"))
    rng = sorted(k for k in state if k.startswith("rng."))
    check(rng == ["rng.0.cpu", "rng.1.cpu"], f"generator states in the checkpoint: {rng}")
    check(not np.array_equal(state["rng.0.cpu"], state["rng.1.cpu"]), "the two ranks hold the same generator state")
    codes, outs = finish(spawn_ranks(exe, ["--config", cfg, "--output-dir", run, "--resume", "auto"] + random_sets,
                                     2), 300)
    check(codes == [0, 0], f"resume failed: {codes}\n{outs[0]}")
    a, b = losses(ref), losses(run)
    check(len(a) == len(b) == 300, f"{len(a)} vs {len(b)} steps")
    differ = [i + 1 for i, (x, y) in enumerate(zip(a, b)) if x != y]
    check(not differ, f"resumed 2-process losses differ from the uninterrupted run from step {differ[:1]}")
    print(f"SIGTERM at step {stopped_at} of 300 with drop-path and RoPE rescaling, resumed: all 300 losses equal "
          f"the uninterrupted run (final {b[-1]:.6f}); the ranks' generator states differ")

    # ---- 2b. a 2-process checkpoint resumed by ONE process (accumulating 2 micro-batches per step) -----------
    # The data position is per process, so it must be converted (micro-batch b of 2 = micro-batch 2b of 1); read
    # unconverted, the run would repeat samples and the losses would part from the reference at once.
    ref1 = os.path.join(work, "ref_1proc")
    single(exe, cfg, ref1, "schedule.max_steps=300", "train.micro_batch=16")
    one = os.path.join(work, "stopped_2proc_resumed_by_1")
    stopped_at = stop_2proc(exe, cfg, one, long_sets)
    r = subprocess.run([exe, "--config", cfg, "--output-dir", one, "--resume", "auto"] + long_sets,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    check(r.returncode == 0, f"1-process resume of a 2-process checkpoint failed:\n{r.stdout}")
    check("written by 2 processes, this run has 1" in r.stdout, "no position-conversion line:\n" + r.stdout[-2000:])
    a, c = losses(ref1), losses(one)
    check(len(c) == 300, f"{len(c)} steps after the 1-process resume")
    # Summation order differs (1 process sums 2 micro-batches, Gloo sums 2 ranks), so the curves drift apart
    # chaotically over hundreds of steps (~1e-4 by step 200); the first 20 steps after the resume stay ~1e-7.
    dl = max(abs(x - y) for x, y in zip(a[stopped_at:stopped_at + 20], c[stopped_at:stopped_at + 20]))
    check(dl <= 1e-5, f"1-process resume of the 2-process run: max |loss diff| {dl:.2e} over the 20 steps after "
          "the resume")
    print(f"a 2-process checkpoint (step {stopped_at}) resumed by 1 process: steps {stopped_at + 1}-{stopped_at + 20} "
          f"within {dl:.1e} of one process throughout")

    # ---- 3. a rank killed mid-run: the survivor names it (rank and host), in one line, without stack traces ------
    for victim in (1, 0):
        run = os.path.join(work, f"killed_{victim}")
        procs = spawn_ranks(exe, ["--config", cfg, "--output-dir", run, "--set", "schedule.max_steps=100000",
                                  "--set", "train.micro_batch=8"], 2)
        metrics = os.path.join(run, "metrics.jsonl")
        deadline = time.time() + 120
        while time.time() < deadline and not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 5):
            time.sleep(0.01)
        t0 = time.time()
        procs[victim].kill()
        codes, outs = finish(procs, 90)
        elapsed = time.time() - t0
        survivor = 1 - victim
        out = outs[survivor]
        check(codes[survivor] not in (0, None), f"rank {survivor} exited {codes[survivor]} after rank {victim} was killed")
        lines = [l for l in out.splitlines() if f"rank {survivor} of 2 (" in l and "failed:" in l]
        check(len(lines) == 1, f"rank {survivor} should report once:\n" + out[-3000:])
        named = (f"rank(s) {victim} (" in lines[0] and "stopped answering" in lines[0]) if victim else \
            "rank 0 (" in lines[0] and "is gone: the rendezvous store it served stopped answering" in lines[0]
        check(named, f"rank {survivor} does not name rank {victim}:\n" + lines[0])
        check("frame #" not in out and "Exception raised from" not in out,
              f"stack traces in rank {survivor}'s output:\n" + out[-3000:])
        print(f"rank {victim} killed: rank {survivor} exited {codes[survivor]} after {elapsed:.1f} s: " + lines[0].strip())

    # ---- 4. a rank that fails with an error is named by the other ------------------------------------------
    run = os.path.join(work, "failing")
    procs = spawn_ranks(exe, ["--config", cfg, "--output-dir", run, "--set", "train.micro_batch=8"], 2,
                        per_rank_args=[[], ["--set", "data.dataset=image_folder", "--set", "data.root=/nonexistent"]])
    codes, outs = finish(procs, 90)
    check(codes[0] != 0 and codes[1] != 0, f"exit codes {codes}")
    check(") reported: image_folder: /nonexistent/train is not a directory" in outs[0] and "failed: rank 1 (" in outs[0],
          "rank 0 does not name rank 1's error:\n" + outs[0][-2000:])
    print("rank 1 failed to open its data: " + next(l for l in outs[0].splitlines() if ") reported: " in l).strip())
    print("OK")


if __name__ == "__main__":
    main()
