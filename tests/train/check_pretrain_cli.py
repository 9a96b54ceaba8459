"""End-to-end checks of the nepa_pretrain executable (run by ctest).

1. A run on a generated ImageFolder tree (BMP files written here, one corrupt) is stopped with SIGTERM: it must
   exit 0 after writing a checkpoint; `--resume auto` then finishes it, metrics.jsonl holds each step once, and
   the exported backbone loads strictly into the PyTorch reference with the same outputs as the C++ model.
2. The k-NN readout runs at init and at the end and is written to metrics.jsonl.

usage: check_pretrain_cli.py <nepa_pretrain> <nepa_tool> <work dir>
"""
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np


def write_bmp(path, rgb):
    """24-bit BMP (bottom-up BGR rows padded to 4 bytes): needs no imaging library."""
    h, w, _ = rgb.shape
    row = (w * 3 + 3) & ~3
    data = bytearray()
    for y in range(h - 1, -1, -1):
        line = rgb[y, :, ::-1].astype(np.uint8).tobytes()
        data += line + b"\0" * (row - len(line))
    header = struct.pack("<2sIHHI", b"BM", 54 + len(data), 0, 0, 54)
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(data), 2835, 2835, 0, 0)
    with open(path, "wb") as f:
        f.write(header + info + data)


def make_tree(root, classes=3, per_class=12, size=20):
    rng = np.random.default_rng(0)
    for c in range(classes):
        d = os.path.join(root, "train", f"class_{c}")
        os.makedirs(d, exist_ok=True)
        for i in range(per_class):
            yy, xx = np.mgrid[0:size, 0:size]
            base = 127 + 100 * np.sin((xx * (c + 1) + yy * (2 - c)) / 3.0)
            img = np.stack([base, base[::-1], base.T], -1) + rng.normal(0, 10, (size, size, 3))
            write_bmp(os.path.join(d, f"img_{i:03d}.bmp"), np.clip(img, 0, 255))
    # An unreadable file in the middle of the set: skipped, counted, logged once.
    with open(os.path.join(root, "train", "class_1", "broken.bmp"), "wb") as f:
        f.write(b"BM this is not an image")
    shutil.copytree(os.path.join(root, "train"), os.path.join(root, "val"))


CONFIG = """
model:
  image_size: 16
  patch_size: 4
  num_channels: 3
  hidden_size: 32
  num_hidden_layers: 2
  num_attention_heads: 2
  intermediate_size: 64
data:
  dataset: image_folder
  root: {root}
  split: train
  eval_split: val
  image_size: 16
  num_workers: 2
  max_bad_fraction: 0.05
  eval_crop_pct: 1.0
optim:
  base_lr: 1.0e-3
schedule:
  max_steps: {steps}
  warmup_fraction: 0.1
train:
  total_batch: 8
  micro_batch: 4
  threads: 1
  output_dir: {out}
  checkpoint_every: 1000
log:
  log_every: 1
eval:
  knn_k: 5
  knn_at_init: true
"""


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    exe, tool, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    root, out = os.path.join(work, "data"), os.path.join(work, "run")
    make_tree(root)
    cfg = os.path.join(work, "run.yaml")
    with open(cfg, "w") as f:
        f.write(CONFIG.format(root=root, out=out, steps=100000))

    # --- 1. SIGTERM mid-run -----------------------------------------------------------------------------------
    log = open(os.path.join(work, "first.log"), "w")
    proc = subprocess.Popen([exe, "--config", cfg], stdout=log, stderr=subprocess.STDOUT)
    metrics = os.path.join(out, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline:
        if os.path.exists(metrics) and sum(1 for r in read_jsonl(metrics) if r["kind"] == "train") >= 3:
            break
        if proc.poll() is not None:
            sys.exit("nepa_pretrain ended early:\n" + open(log.name).read())
        time.sleep(0.2)
    else:
        proc.kill()
        sys.exit("no progress within 120 s:\n" + open(log.name).read())
    proc.send_signal(signal.SIGTERM)
    rc = proc.wait(timeout=120)
    text = open(log.name).read()
    assert rc == 0, f"exit code {rc} after SIGTERM:\n{text}"
    assert "SIGTERM received" in text, text
    latest = open(os.path.join(out, "checkpoints", "latest")).read().strip()
    stopped_at = int(latest.split("_")[1].split(".")[0])
    assert stopped_at >= 3, latest
    bad = os.path.join("train", "class_1", "broken.bmp")
    assert text.count(bad) == 1, "the unreadable image must be logged exactly once:\n" + text
    assert not os.path.exists(os.path.join(out, "final")), "an interrupted run must not export"
    print(f"SIGTERM: exit 0, checkpoint {latest}")

    # --- 2. resume to a nearby end ------------------------------------------------------------------------------
    end = stopped_at + 4
    with open(cfg, "w") as f:
        f.write(CONFIG.format(root=root, out=out, steps=end))
    # The schedule length changed (max_steps), which is allowed; the model and batch must not.
    res = subprocess.run([exe, "--config", cfg, "--resume", "auto"], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert f"resumed from {os.path.join(out, 'checkpoints', latest)}" in res.stdout, res.stdout
    rows = read_jsonl(metrics)
    steps = [r["step"] for r in rows if r["kind"] == "train"]
    assert steps == list(range(1, end + 1)), steps
    evals = [r for r in rows if r["kind"] == "eval"]
    assert len(evals) == 2 and evals[0]["step"] == 0 and evals[-1]["step"] == end, evals
    for e in evals:
        assert 0 <= e["knn_mean_top1"] <= 100 and 0 <= e["knn_last_top1"] <= 100, e
    final = os.path.join(out, "final")
    assert os.path.exists(os.path.join(final, "model.safetensors")), os.listdir(out)
    print(f"resume: steps 1..{end} once each, k-NN {evals[0]['knn_mean_top1']:.1f}% -> {evals[-1]['knn_mean_top1']:.1f}%")

    # --- 3. the export is an HF-layout backbone the reference loads strictly ------------------------------------
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
    import torch
    from safetensors.torch import load_file, save_file
    import nepa_reference as ref

    with open(os.path.join(final, "config.json")) as f:
        config = json.load(f)
    model = ref.ViTNepaReference(config).double().eval()
    state = {k[len("vit_nepa."):]: v.double() for k, v in load_file(os.path.join(final, "model.safetensors")).items()}
    model.load_state_dict(state, strict=True)
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    save_file({"pixel_values": x.float()}, os.path.join(work, "x.safetensors"))
    subprocess.run([tool, "forward", "--model", final, "--input", os.path.join(work, "x.safetensors"),
                    "--output", os.path.join(work, "y.safetensors")], check=True, capture_output=True)
    y = load_file(os.path.join(work, "y.safetensors"))["last_hidden_state"].double()
    with torch.no_grad():
        expected = model(x.double())[0]
    diff = (y - expected).abs().max().item()
    assert diff < 1e-4, diff
    print(f"export: strict load into the reference, max |diff| {diff:.2e}")


if __name__ == "__main__":
    main()
