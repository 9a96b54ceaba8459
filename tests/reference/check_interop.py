"""C++ <-> Python interop through files only (run by ctest as `interop_python_cpp`).

1. For every parity fixture (written by Python's safetensors), `nepa_tool forward` runs the C++ model and
   writes its outputs; Python's safetensors reads that C++-written file and compares with the reference.
2. `nepa_tool init` writes a C++-initialised checkpoint (model.safetensors + config.json); the reference
   model is built from that config.json and loads the weights with strict key matching, and both sides
   run the same input to the same outputs.
Usage: python check_interop.py NEPA_TOOL FIXTURE_DIR WORK_DIR
"""
import json
import os
import subprocess
import sys

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nepa_reference import ViTNepaReference, nepa_loss  # noqa: E402

TOL = 1e-5
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args):
    subprocess.run([str(a) for a in args], check=True, stdout=subprocess.DEVNULL)


def max_diff(a, b):
    return (a.double() - b.double()).abs().max().item()


def main():
    tool, fixtures, work = sys.argv[1:4]
    os.makedirs(work, exist_ok=True)
    failures = []
    cases = open(os.path.join(fixtures, "cases.txt")).read().split()
    for case in cases:
        d = os.path.join(fixtures, case)
        exp = load_file(os.path.join(d, "expected.safetensors"))
        if "last_hidden_state" not in exp or exp["meta.training"].item() > 0:
            continue  # classifier and training-mode cases: test_parity runs them (nepa_tool forward is eval mode)
        out = os.path.join(work, case + ".out.safetensors")
        run(tool, "forward", "--model", d, "--input", os.path.join(d, "input.safetensors"), "--output", out)
        with safe_open(out, "pt") as f:
            got = {k: f.get_tensor(k) for k in f.keys()}
        for k in ("last_hidden_state", "input_embedding", "loss"):
            diff = max_diff(got[k], exp[k])
            print(f"{case}: nepa_tool forward {k}: max diff {diff:.2e}")
            if diff > TOL:
                failures.append(f"{case}/{k}: {diff}")

    # Bidirectional mode through the CLI flag, against the reference run bidirectionally.
    d = os.path.join(fixtures, cases[0])
    config = json.load(open(os.path.join(d, "config.json")))
    ref = ViTNepaReference(config).double()
    weights = {k[len("vit_nepa."):]: v for k, v in load_file(os.path.join(d, "model.safetensors")).items()}
    ref.load_state_dict({k: v.double() for k, v in weights.items()}, strict=True)
    pixels = load_file(os.path.join(d, "input.safetensors"))["pixel_values"]
    out = os.path.join(work, "bidirectional.out.safetensors")
    run(tool, "forward", "--model", d, "--input", os.path.join(d, "input.safetensors"), "--output", out,
        "--bidirectional")
    with torch.no_grad():
        h, _ = ref(pixels.double(), causal=False)
    diff = max_diff(load_file(out)["last_hidden_state"], h)
    print(f"bidirectional: max diff {diff:.2e}")
    if diff > TOL:
        failures.append(f"bidirectional: {diff}")

    # A checkpoint written by C++ loads into the reference with exactly the released key names.
    init_dir = os.path.join(work, "cpp_init")
    run(tool, "init", "--config", os.path.join(ROOT, "configs/pretrain/fmnist_tiny.yaml"), "--output", init_dir)
    config = json.load(open(os.path.join(init_dir, "config.json")))
    assert config["model_type"] == "vit_nepa" and config["architectures"] == ["ViTNepaForPreTraining"], config
    ref = ViTNepaReference(config).double()
    sd = load_file(os.path.join(init_dir, "model.safetensors"))
    assert all(k.startswith("vit_nepa.") for k in sd), sorted(sd)
    ref.load_state_dict({k[len("vit_nepa."):]: v.double() for k, v in sd.items()}, strict=True)
    info = subprocess.run([tool, "info", init_dir], check=True, capture_output=True, text=True).stdout
    numel = sum(v.numel() for v in sd.values())
    if f"tensors: {len(sd)}  parameters: {numel}" not in info:
        failures.append(f"nepa_tool info does not report {len(sd)} tensors / {numel} parameters:\n{info}")
    for k, v in sd.items():
        if f"  {k}  F32 [{', '.join(map(str, v.shape))}]" not in info:
            failures.append(f"nepa_tool info misses {k}")
    gen = torch.Generator().manual_seed(0)
    pixels = torch.rand(3, config["num_channels"], 28, 28, generator=gen) * 2 - 1
    inp = os.path.join(work, "cpp_init.in.safetensors")
    save_file({"pixel_values": pixels}, inp)
    out = os.path.join(work, "cpp_init.out.safetensors")
    run(tool, "forward", "--model", init_dir, "--input", inp, "--output", out)
    with torch.no_grad():
        h, z = ref(pixels.double())
        loss = nepa_loss(h, z)
    got = load_file(out)
    for k, v in (("last_hidden_state", h), ("input_embedding", z), ("loss", loss)):
        diff = max_diff(got[k], v)
        print(f"cpp_init: {k}: max diff {diff:.2e}")
        if diff > TOL:
            failures.append(f"cpp_init/{k}: {diff}")

    if failures:
        print("FAILED:", *failures, sep="\n  ")
        sys.exit(1)
    print("interop OK")


if __name__ == "__main__":
    main()
