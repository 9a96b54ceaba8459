"""PyTorch eager side of bench/pretrain_step: times forward + NEPA loss + backward + AdamW on the weights the
C++ benchmark wrote, or measures the fp32 GEMM peak. Prints one JSON line.

  pretrain_step.py step <model dir> --threads T --batch B --steps N --warmup W [--check]
  pretrain_step.py gemm --threads T
"""
import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nepa_eager  # noqa: E402
from nepa_eager import EagerNepa, nepa_loss  # noqa: E402


def gemm_peak(threads, m=4096, k=1024, n=1024, reps=20):
    torch.set_num_threads(threads)
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(3):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2.0 * m * k * n / best


def step_bench(args):
    from safetensors.torch import load_file

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = json.load(open(os.path.join(args.model, "config.json")))
    model = EagerNepa(config)
    state = {k[len("vit_nepa."):]: v for k, v in load_file(os.path.join(args.model, "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    size, ch = config["image_size"], config["num_channels"]
    x = torch.randn(args.batch, ch, size, size)
    if args.check:
        import nepa_reference as ref_mod
        reference = ref_mod.ViTNepaReference(config).double().eval()
        reference.load_state_dict({k: v.double() for k, v in state.items()}, strict=True)
        model.eval()
        with torch.no_grad():
            diff = (model(x[:2])[0].double() - reference(x[:2].double())[0]).abs().max().item()
        model.train()
        if diff > 1e-4:
            sys.exit(f"eager model disagrees with the reference: max |diff| {diff}")
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.05}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-4, betas=(0.9, 0.95))
    model.train()

    def one():
        h, z = model(x)
        loss = nepa_loss(h, z)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        one()
    times = []
    for _ in range(args.steps):
        t = time.perf_counter()
        one()
        times.append(time.perf_counter() - t)
    times.sort()
    median = times[len(times) // 2]
    print(json.dumps({"img_per_s": args.batch / median, "step_ms": 1e3 * median, "threads": torch.get_num_threads()}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["step", "gemm"])
    p.add_argument("model", nargs="?")
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--check", action="store_true")
    args = p.parse_args()
    if args.mode == "gemm":
        print(json.dumps({"gflops": gemm_peak(args.threads) / 1e9, "threads": args.threads}))
    else:
        step_bench(args)


if __name__ == "__main__":
    main()
