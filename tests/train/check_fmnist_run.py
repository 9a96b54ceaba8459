"""A short nepa_pretrain run on the embedded Fashion-MNIST data: the training loss must fall clearly and the
k-NN readouts (at init and at the end) must be in metrics.jsonl.

usage: check_fmnist_run.py <nepa_pretrain> <repo> <run dir>
"""
import json
import os
import shutil
import subprocess
import sys

exe, repo, out = sys.argv[1:4]
shutil.rmtree(out, ignore_errors=True)
cmd = [exe, "--config", os.path.join(repo, "configs/pretrain/fmnist_tiny.yaml"), "--output-dir", out,
       "--set", "schedule.max_steps=60", "--set", "schedule.warmup_fraction=0.1", "--set", "log.log_every=10",
       "--set", "model.num_hidden_layers=2",
       "--set", "eval.knn_train_samples=2000", "--set", "eval.knn_eval_samples=500"]
res = subprocess.run(cmd, capture_output=True, text=True, timeout=500)
print(res.stdout[-3000:])
assert res.returncode == 0, res.stderr
rows = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
train = [r for r in rows if r["kind"] == "train"]
evals = [r for r in rows if r["kind"] == "eval"]
assert [r["step"] for r in train] == list(range(10, 61, 10)), train
first, last = train[0]["loss"], train[-1]["loss"]
assert last < first - 0.1, f"loss did not fall: {first} -> {last}"
assert -1.0 <= last <= 1.0
assert [e["step"] for e in evals] == [0, 60], evals
print(f"loss {first:.4f} -> {last:.4f}; k-NN mean-pooled {evals[0]['knn_mean_top1']:.1f}% -> "
      f"{evals[1]['knn_mean_top1']:.1f}%")
