"""PyTorch-eager side of bench/pretrain_step (driven by bench_pretrain_step; usable alone).

    pretrain_step.py step MODEL_DIR --threads T --batch B --steps N --warmup W [--seed S] [--check]
        times forward + NEPA loss + backward + AdamW.step on the folder's weights; prints one JSON line
        {img_per_s, step_ms, forward_ms, backward_ms, optim_ms, minflt, sys_ms, threads, loss[, check]}
        (medians over the timed steps; minflt and sys_ms are page faults and kernel CPU time per step)
    pretrain_step.py serve MODEL_DIR --threads T --batch B [--seed S] [--check]
        the same model and optimizer, one step per "step" line read from stdin, one JSON line per step, so that
        the C++ driver can alternate its steps with these and background load hits both sides alike; a line
        "profile" runs one step under torch.profiler and answers {step_ms, kernels: [[name, ms, launches], ...]}
        with the CUDA kernels (GPU only)
    step and serve take --device cpu|cuda and --precision fp32|bf16 (torch.autocast); on a GPU every phase ends
    with torch.cuda.synchronize(), as on the C++ side
    pretrain_step.py gemm --threads T [--reps R]
        the fp32 GEMM peak on T threads; prints {gflops, shapes: {"MxKxN": gflops}, threads}
"""
import argparse
import json
import os
import resource
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nepa_eager  # noqa: E402

# Same list as kGemmShapes in pretrain_step.cpp: a square GEMM on the BLAS plateau and the two ViT-S/16 MLP
# GEMMs at batch 32 (197 tokens), the shapes the step spends most of its time in. The peak is the best of them.
GEMM_SHAPES = [(2048, 2048, 2048), (32 * 197, 384, 1536), (32 * 197, 1536, 384)]


def gemm_peak(threads, reps):
    torch.set_num_threads(threads)
    per_shape = {}
    with torch.no_grad():
        for m, k, n in GEMM_SHAPES:
            a, b, out = torch.randn(m, k), torch.randn(k, n), torch.empty(m, n)
            for _ in range(2):
                torch.mm(a, b, out=out)
            best = float("inf")
            for _ in range(reps):
                t = time.perf_counter()
                torch.mm(a, b, out=out)
                best = min(best, time.perf_counter() - t)
            per_shape[f"{m}x{k}x{n}"] = 2.0 * m * k * n / best / 1e9
    return {"gflops": max(per_shape.values()), "shapes": per_shape, "threads": torch.get_num_threads()}


class Stepper:
    def __init__(self, model_dir, batch, seed, device="cpu", precision="fp32"):
        torch.manual_seed(seed)
        config, self.model, _ = nepa_eager.load_model(model_dir)
        self.device = torch.device(device)
        self.model.to(self.device).train()
        self.optimizer = nepa_eager.adamw(self.model)
        self.bf16 = precision == "bf16"
        size, ch = config["image_size"], config["num_channels"]
        self.pixels = (torch.rand(batch, ch, size, size) * 2 - 1).to(self.device)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def step(self):
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, torch.bfloat16, enabled=self.bf16):
            h, z = self.model(self.pixels)
            loss = nepa_eager.nepa_loss(h, z)
        self.sync()
        t1 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.sync()
        t2 = time.perf_counter()
        self.optimizer.step()
        self.sync()
        t3 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        value = loss.item()
        if value != value or abs(value) == float("inf"):
            sys.exit(f"non-finite loss {value}")
        return {"step_ms": 1e3 * (t3 - t0), "forward_ms": 1e3 * (t1 - t0), "backward_ms": 1e3 * (t2 - t1),
                "optim_ms": 1e3 * (t3 - t2), "minflt": r1.ru_minflt - r0.ru_minflt,
                "sys_ms": 1e3 * (r1.ru_stime - r0.ru_stime), "loss": value}


def profile_step(stepper):
    """One step under torch.profiler: its CUDA kernels by total time, as the C++ side lists its own."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        sample = stepper.step()
    kernels = {}
    for e in prof.events():
        if e.device_type == torch.autograd.DeviceType.CUDA and e.device_time > 0:
            k = kernels.setdefault(e.name, [0.0, 0])
            k[0] += e.device_time / 1e3
            k[1] += 1
    return {"step_ms": sample["step_ms"], "kernels": [[n, ms, c] for n, (ms, c) in kernels.items()]}


def median(xs):
    xs = sorted(xs)
    return xs[len(xs) // 2]


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["step", "serve", "gemm"])
    ap.add_argument("model", nargs="?", help="step/serve: folder with config.json + model.safetensors")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--reps", type=int, default=10, help="gemm: repetitions per shape (best kept)")
    ap.add_argument("--check", action="store_true", help="first verify the model against the float64 reference")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "gemm":
        emit(gemm_peak(args.threads, args.reps))
        return
    if not args.model:
        ap.error(f"{args.mode} needs MODEL_DIR")
    header = {"threads": torch.get_num_threads()}
    if args.check:
        header["check"] = nepa_eager.check_against_reference(args.model)
    stepper = Stepper(args.model, args.batch, args.seed, args.device, args.precision)

    if args.mode == "serve":
        emit(dict(header, ready=True))
        for line in sys.stdin:
            if line.strip() == "step":
                emit(stepper.step())
            elif line.strip() == "profile":
                emit(profile_step(stepper))
            else:
                sys.exit(f"serve: unknown command {line.strip()!r}")
        return

    if args.steps < 1:
        ap.error("--steps must be >= 1")
    for _ in range(args.warmup):
        stepper.step()
    samples = [stepper.step() for _ in range(args.steps)]
    out = {k: median([s[k] for s in samples]) for k in samples[0]}
    out["loss"] = samples[-1]["loss"]
    out["img_per_s"] = args.batch / (out["step_ms"] / 1e3)
    emit(dict(header, **out))


if __name__ == "__main__":
    main()
