"""What the memory allocator costs nepa_pretrain as users run it (issue 16 item 1): data-parallel processes on one
machine (the demo: 2 ranks of 64 images, one thread each), the same run under each allocator, alternating round by
round so that all see the same machine state. Per run and rank, from the kernel's accounting of the finished
process (wait4): minor page faults, system and user CPU seconds, peak RSS; and rank 0's img/s (median of the
logged intervals after the first two, which hold the first batches' faults and the warm-up).

Allocators:
  glibc        the default (large blocks are mmap'ed and returned on free: every step faults them in again)
  glibc-tuned  GLIBC_TUNABLES mmap_max=0 and a 64 GiB trim threshold (what bench_pretrain_step --malloc-tune sets):
               freed memory stays in the heap and is reused without faults
  jemalloc     Debian's libjemalloc2, LD_PRELOAD
  tcmalloc     Debian's libtcmalloc-minimal4, LD_PRELOAD
An allocator whose library is missing is reported and skipped (apt-get install libjemalloc2 libtcmalloc-minimal4).
The apps link tcmalloc themselves when it is installed (cmake/NepaAllocator.cmake): --bin should then be a build
configured with -DNEPA_ALLOCATOR=glibc, for the variants above to mean what they say, and --linked-bin BIN adds
the app as built (no environment) as one more variant, "linked".

Run on an otherwise idle machine:
  python bench/allocator.py --bin build-glibc/apps/nepa_pretrain --linked-bin build/apps/nepa_pretrain
                                                                 # the demo: fmnist_tiny.yaml, 2 ranks, 120 steps
  python bench/allocator.py --config configs/pretrain/vits.yaml --set data.dataset=synthetic --steps 12 --log-every 2
"""
import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time

LIBDIR = "/usr/lib/x86_64-linux-gnu"
ALLOCATORS = {
    "glibc": {},
    "glibc-tuned": {"GLIBC_TUNABLES": "glibc.malloc.mmap_max=0:glibc.malloc.trim_threshold=68719476736"},
    "jemalloc": {"LD_PRELOAD": f"{LIBDIR}/libjemalloc.so.2"},
    "tcmalloc": {"LD_PRELOAD": f"{LIBDIR}/libtcmalloc_minimal.so.4"},
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(exe, args, ranks, extra_env, log):
    """Starts the ranks as torchrun would and waits for each with wait4: its own rusage, not its siblings'."""
    port = free_port()
    procs = []
    with open(log, "w") as out:
        for r in range(ranks):
            env = dict(os.environ, RANK=str(r), WORLD_SIZE=str(ranks), LOCAL_RANK=str(r),
                       LOCAL_WORLD_SIZE=str(ranks), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), **extra_env)
            procs.append(subprocess.Popen([exe] + args, env=env, stdout=out, stderr=subprocess.STDOUT))
        usage = {}
        for p in procs:
            _, status, ru = os.wait4(p.pid, 0)
            p.returncode = os.waitstatus_to_exitcode(status)
            usage[p.pid] = ru
    if any(p.returncode != 0 for p in procs):
        sys.exit(f"error: a rank failed ({[p.returncode for p in procs]}): {log}")
    return [usage[p.pid] for p in procs]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", default="build/apps/nepa_pretrain", help="nepa_pretrain linked without an allocator")
    ap.add_argument("--linked-bin", help="nepa_pretrain as built with its allocator: the variant 'linked'")
    ap.add_argument("--config", default="configs/pretrain/fmnist_tiny.yaml")
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--micro-batch", type=int, default=64)
    ap.add_argument("--steps", type=int, default=120)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--allocators", default=",".join(ALLOCATORS))
    ap.add_argument("--set", action="append", default=[], help="config override for every run")
    ap.add_argument("--out", default="runs/bench/allocator")
    a = ap.parse_args()
    if a.steps < 3 * a.log_every:
        sys.exit(f"error: --steps {a.steps}: at least 3 x --log-every (the first two intervals are warm-up)")
    names = []
    for name in a.allocators.split(","):
        if name not in ALLOCATORS:
            sys.exit(f"error: --allocators: unknown '{name}' ({', '.join(ALLOCATORS)})")
        lib = ALLOCATORS[name].get("LD_PRELOAD")
        if lib and not os.path.exists(lib):
            print(f"{name}: {lib} is missing, skipped")
            continue
        names.append(name)
    variants = {n: (a.bin, ALLOCATORS[n]) for n in names}
    if a.linked_bin:
        names.append("linked")
        variants["linked"] = (a.linked_bin, {})
    for name, (exe, _) in variants.items():
        if not os.access(exe, os.X_OK):
            sys.exit(f"error: {name}: {exe} is not an executable")
    os.makedirs(a.out, exist_ok=True)
    sets = [f"train.micro_batch={a.micro_batch}", f"schedule.max_steps={a.steps}", f"log.log_every={a.log_every}",
            "eval.knn_k=0", "eval.knn_at_init=false", "train.checkpoint_every=100000", "train.threads=1"] + a.set
    rows = {n: [] for n in names}
    for r in range(1, a.rounds + 1):
        for name in names:
            run_dir = os.path.join(a.out, f"{name}-{r}")
            subprocess.run(["rm", "-rf", run_dir], check=True)
            args = ["--config", a.config, "--output-dir", run_dir] + [x for s in sets for x in ("--set", s)]
            t0 = time.time()
            exe, env = variants[name]
            usage = run(exe, args, a.ranks, env, run_dir + ".log")
            wall = time.time() - t0
            train = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if '"kind":"train"' in l]
            img_s = statistics.median(x["img_per_s"] for x in train[2:])
            rows[name].append({"img_s": img_s, "wall": wall,
                               "minflt": sum(u.ru_minflt for u in usage) / a.ranks,
                               "sys": sum(u.ru_stime for u in usage) / a.ranks,
                               "user": sum(u.ru_utime for u in usage) / a.ranks,
                               "rss_mb": max(u.ru_maxrss for u in usage) / 1024})
            x = rows[name][-1]
            with open(run_dir + ".log") as f:
                said = next((l.split("memory allocator: ", 1)[1].strip() for l in f if "memory allocator: " in l),
                            "(not logged)")
            x["said"] = said
            print(f"round {r} {name:12s} {x['img_s']:7.1f} img/s  {x['minflt']:9.0f} minor faults/rank  "
                  f"sys {x['sys']:6.2f} s/rank  user {x['user']:6.1f} s/rank  peak RSS {x['rss_mb']:.0f} MB  "
                  f"(app: {x['said']})", flush=True)
    base = statistics.mean(x["img_s"] for x in rows[names[0]])
    print(f"\n{a.ranks} ranks x micro-batch {a.micro_batch}, {a.steps} steps of {a.config}, {a.rounds} rounds alternating")
    print("| allocator | img/s per round | mean | vs " + names[0] + " | minor faults per rank | sys s per rank "
          "| user s per rank | peak RSS (MB) |")
    print("|---|---|---|---|---|---|---|---|")
    for name in names:
        xs = rows[name]
        m = statistics.mean(x["img_s"] for x in xs)
        per_round = " / ".join("%.0f" % x["img_s"] for x in xs)
        print(f"| {name} | {per_round} | {m:.1f} | {m / base:.2f}x | "
              f"{statistics.mean(x['minflt'] for x in xs):,.0f} | {statistics.mean(x['sys'] for x in xs):.2f} | "
              f"{statistics.mean(x['user'] for x in xs):.1f} | {max(x['rss_mb'] for x in xs):.0f} |")


if __name__ == "__main__":
    main()
