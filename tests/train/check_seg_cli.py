"""End-to-end checks of nepa_seg on Fashion-MNIST scenes in the ADE20K layout (run by ctest).

1. nepa_tool make-scenes writes the scenes; nepa_seg trains from a backbone folder (the init report names the
   tensors loaded), evaluates during and after training, and exports final/ and best/ (model.safetensors with
   mmseg's head names + config.yaml + config.json with the scene classes); per-class tables name the classes.
2. --eval-only on the exports gives exactly the mIoU / mAcc / aAcc the training run logged.
3. --predict writes paletted label PNGs and overlays; the confusion of those PNGs against the annotations, computed
   here, gives the mIoU of --eval-only: the files are the model's predictions at full resolution.
4. A run stopped by SIGTERM after its first evaluation and resumed ends with the weights (BatchNorm statistics
   included), their EMA, the best EMA export and the figures of the uninterrupted run.
5. Two data-parallel processes (micro-batch 4 each) equal one process with micro-batch 8, step by step: SyncBN
   sees the whole batch (randomness off: drop path, RoPE rescaling, head dropout).
6. The recipe configs: --dry-run prints the BEiT layer-decay table of vitb_ade20k.yaml and vitl_ade20k.yaml.
7. Bad inputs end with one line: a missing annotation (named), seg.out_indices unset, a schedule other than poly.

usage: check_seg_cli.py <nepa_seg> <nepa_tool> <source dir> <work dir>
"""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
from PIL import Image
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dist"))
from ranks import finish, spawn_ranks  # noqa: E402

CONFIG = """
model:
  image_size: 32
  patch_size: 4
  num_channels: 1
  hidden_size: 32
  num_hidden_layers: 4
  num_attention_heads: 2
  intermediate_size: 64
  is_causal: false
  drop_path_prob: 0.1
data:
  dataset: ade20k
  root: {root}
  split: training
  eval_split: validation
  image_size: 32
  num_channels: 1
  mean: [0.5]
  std: [0.5]
  num_workers: 1
optim:
  base_lr: 2.0e-3
  lr_batch_reference: 8
  betas: [0.9, 0.999]
  grad_clip: 0.0
schedule:
  name: poly
  max_steps: 60
train:
  total_batch: 8
  micro_batch: 8
  threads: 1
  ema: false
  checkpoint_every: 100
log:
  log_every: 1
eval:
  knn_k: 0
seg:
  out_indices: [0, 1, 2, 3]
  channels: 16
  aux_channels: 8
  scale_long: 32
  scale_short: 32
  warmup_iters: 4
  eval_crop: 32
  eval_stride: 21
  eval_every: 30
"""


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def run(args, timeout=300, expect=0):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    check(r.returncode == expect, f"{' '.join(args)} exited {r.returncode} (expected {expect}):\n{r.stdout[-3000:]}")
    return r.stdout


def records(run_dir, kind):
    return [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if f'"kind":"{kind}"' in l]


def eval_only(exe, cfg, weights, out):
    text = run([exe, "--config", cfg, "--eval-only", "--weights", weights, "--output-dir", out])
    m = re.search(r"mIoU ([0-9.]+) mAcc ([0-9.]+) aAcc ([0-9.]+) on ([0-9]+) images", text)
    check(m, "no figures line:\n" + text)
    return [float(m.group(i)) for i in (1, 2, 3)]


def same_weights(a_dir, b_dir, tol=0.0):
    a = load_file(os.path.join(a_dir, "model.safetensors"))
    b = load_file(os.path.join(b_dir, "model.safetensors"))
    check(a.keys() == b.keys(), f"{a_dir} and {b_dir} hold different tensors")
    worst = max(float(np.abs(a[k].astype(np.float64) - b[k].astype(np.float64)).max()) for k in a)
    check(worst <= tol, f"{a_dir} and {b_dir} differ by {worst:.3e} (tolerance {tol})")
    return worst


def miou_of_files(pred_dir, ann_dir, classes):
    """mmseg's mIoU (nanmean over classes) of the predicted label PNGs against the reduced annotations."""
    conf = np.zeros((classes, classes), np.int64)
    for name in sorted(os.listdir(ann_dir)):
        ann = np.array(Image.open(os.path.join(ann_dir, name))).astype(np.int64)
        label = np.where(ann == 0, 255, ann - 1)
        pred_img = Image.open(os.path.join(pred_dir, name[:-4] + "_labels.png"))
        check(pred_img.mode == "P", f"{name}: label PNG mode {pred_img.mode}, expected a paletted PNG")
        pred = np.array(pred_img).astype(np.int64)
        check(pred.shape == label.shape, f"{name}: prediction {pred.shape} vs annotation {label.shape}")
        keep = label != 255
        np.add.at(conf, (label[keep], pred[keep]), 1)
    inter = np.diag(conf).astype(np.float64)
    union = conf.sum(0) + conf.sum(1) - np.diag(conf)
    with np.errstate(invalid="ignore", divide="ignore"):
        return float(np.nanmean(inter / union) * 100)


def main():
    seg, tool, src, work = sys.argv[1:5]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    scenes = os.path.join(work, "scenes")

    # ---- 1. scenes -> training -> exports -------------------------------------------------------------------
    run([tool, "make-scenes", "--out", scenes, "--seed", "3", "--train", "48", "--val", "8", "--size", "32"])
    classes = [l.strip() for l in open(os.path.join(scenes, "classes.txt")) if l.strip()]
    check(len(classes) == 11 and classes[0] == "background", f"classes.txt: {classes}")
    cfg = os.path.join(work, "seg.yaml")
    open(cfg, "w").write(CONFIG.format(root=scenes))
    backbone = os.path.join(work, "backbone")
    run([tool, "init", "--config", cfg, "--output", backbone])
    run_dir = os.path.join(work, "run")
    out = run([seg, "--config", cfg, "--output-dir", run_dir, "--init", backbone])
    check(re.search(r"backbone: [0-9]+ tensors from " + re.escape(backbone), out), "no init report:\n" + out[:3000])
    check("BEiT layer decay 0.65" in out and "vit_nepa.encoder.layer.3.*" in out, "no lr table:\n" + out[:3000])
    train = records(run_dir, "train")
    check(len(train) == 60 and all(np.isfinite(r["loss"]) for r in train), f"{len(train)} training records")
    check(all(k in train[0] for k in ("loss_seg", "loss_aux", "acc_seg")), f"training record: {train[0]}")
    evals = records(run_dir, "eval")
    check([e["step"] for e in evals] == [30, 60], f"evaluations at {[e['step'] for e in evals]}, expected 30 and 60")
    for d in ("final", "best"):
        keys = load_file(os.path.join(run_dir, d, "model.safetensors")).keys()
        for k in ("vit_nepa.embeddings.cls_token", "backbone.fpn1.0.weight", "decode_head.conv_seg.weight",
                  "auxiliary_head.conv_seg.weight", "decode_head.bottleneck.bn.running_mean"):
            check(k in keys, f"{d}: no {k}")
        hf = json.load(open(os.path.join(run_dir, d, "config.json")))
        check(hf["architectures"] == ["NepaSegmenter"] and list(hf["id2label"].values()) == classes,
              f"{d}/config.json: {hf['architectures']} {hf.get('id2label')}")
        check(os.path.exists(os.path.join(run_dir, d, "config.yaml")), f"{d}: no config.yaml")
    table = open(os.path.join(run_dir, "seg_per_class.md")).read()
    check("| background |" in table and "| Ankle boot |" in table and "mIoU:" in table, "per-class table:\n" + table)
    last = evals[-1]
    check(last["mIoU"] > 1.0, f"60 steps left the model at mIoU {last['mIoU']}: the comparisons below would be vacuous")
    print(f"trained 60 steps: mIoU {last['mIoU']:.2f} mAcc {last['mAcc']:.2f} aAcc {last['aAcc']:.2f}")

    # ---- 2. --eval-only reproduces the logged figures --------------------------------------------------------
    got = eval_only(seg, cfg, os.path.join(run_dir, "final"), os.path.join(work, "eval_final"))
    check(all(abs(a - b) < 0.006 for a, b in zip(got, (last["mIoU"], last["mAcc"], last["aAcc"]))),
          f"--eval-only final: {got} vs logged {last}")
    best = max(e["mIoU"] for e in evals)
    got_best = eval_only(seg, cfg, os.path.join(run_dir, "best"), os.path.join(work, "eval_best"))
    check(abs(got_best[0] - best) < 0.006, f"best/ evaluates to {got_best[0]}, the best logged mIoU was {best}")
    check(os.path.exists(os.path.join(work, "eval_final", "eval_per_class.md")), "no per-class table for --eval-only")
    # A training checkpoint works as --weights too (the architecture then comes from --config).
    ckpts = sorted(f for f in os.listdir(os.path.join(run_dir, "checkpoints")) if f.endswith(".safetensors"))
    got_ckpt = eval_only(seg, cfg, os.path.join(run_dir, "checkpoints", ckpts[-1]), os.path.join(work, "eval_ckpt"))
    check(got_ckpt == got, f"--eval-only on {ckpts[-1]}: {got_ckpt}, on final/: {got}")
    print(f"--eval-only: final {got[0]:.2f} (and its checkpoint) and best {got_best[0]:.2f} reproduced")

    # ---- 3. --predict = the evaluation's predictions ---------------------------------------------------------
    val_images = os.path.join(scenes, "images", "validation")
    images = [os.path.join(val_images, f) for f in sorted(os.listdir(val_images))]
    preds = os.path.join(work, "preds")
    run([seg, "--config", cfg, "--predict"] + images + ["--weights", os.path.join(run_dir, "final"), "--out", preds,
                                                         "--output-dir", os.path.join(work, "predict_log")])
    for f in images:
        stem = os.path.splitext(os.path.basename(f))[0]
        overlay = Image.open(os.path.join(preds, stem + "_overlay.png"))
        check(overlay.mode == "RGB" and overlay.size == Image.open(f).size, f"{stem}: overlay {overlay.mode} {overlay.size}")
    from_files = miou_of_files(preds, os.path.join(scenes, "annotations", "validation"), len(classes))
    check(abs(from_files - got[0]) < 0.006, f"mIoU of the --predict files {from_files:.4f} vs --eval-only {got[0]:.4f}")
    print(f"--predict: {len(images)} label PNGs and overlays; their mIoU {from_files:.2f} = --eval-only's")

    # ---- 4. SIGTERM + resume = uninterrupted ------------------------------------------------------------------
    # With the EMA on (its evaluation twin is made mid-run and must not move the generator) and drop path on.
    args = [seg, "--config", cfg, "--init", backbone, "--set", "schedule.max_steps=300", "--set", "seg.eval_every=40",
            "--set", "train.ema=true", "--set", "train.ema_decay=0.9"]
    run(args + ["--output-dir", os.path.join(work, "whole")])
    stopped = os.path.join(work, "stopped")
    p = subprocess.Popen(args + ["--output-dir", stopped], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(stopped, "metrics.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline and not (os.path.exists(metrics) and '"kind":"eval"' in open(metrics).read()):
        time.sleep(0.01)
    time.sleep(0.3)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    check(p.returncode == 0, f"SIGTERM: exit {p.returncode}\n{out[-2000:]}")
    steps_done = len(records(stopped, "train"))
    check(40 <= steps_done < 300, f"stopped after {steps_done} steps (expected after the evaluation at 40, before 300)")
    run(args + ["--output-dir", stopped, "--resume", "auto"])
    for d in ("final", "final_ema", "best_ema"):
        same_weights(os.path.join(work, "whole", d), os.path.join(stopped, d))
    check("ema_mIoU" in records(stopped, "eval")[-1], "no EMA figures with train.ema")
    check(records(stopped, "eval")[-1] == records(os.path.join(work, "whole"), "eval")[-1], "final figures differ")
    print(f"stopped at step {steps_done} of 300 and resumed: weights, EMA, best EMA, BatchNorm statistics and figures "
          "identical")

    # ---- 5. 2 processes x 4 = 1 process x 8 (SyncBN) --------------------------------------------------------
    # One process normalises with ATen's batch norm, two with the SyncBN function over both: the same statistics
    # (per-process batch norm would see 4 crops instead of 8 and differ from the first step). A gentler lr than the
    # runs above keeps float-level differences from growing over the steps.
    args = [seg, "--config", cfg, "--init", backbone, "--set", "model.drop_path_prob=0.0",
            "--set", "model.pos_embed_rescale=null", "--set", "seg.dropout=0.0", "--set", "schedule.max_steps=24",
            "--set", "optim.base_lr=2.0e-4"]
    one = os.path.join(work, "one_proc")
    run(args + ["--output-dir", one])
    codes, outs = finish(spawn_ranks(seg, args[1:] + ["--output-dir", os.path.join(work, "two_proc"),
                                                        "--set", "train.micro_batch=4"], 2), 300)
    check(codes == [0, 0], f"2 processes exited {codes}:\n" + outs[0][-3000:] + outs[1][-2000:])
    check("data parallel: 2 processes (gloo)" in outs[0], "no data-parallel line:\n" + outs[0][-3000:])
    l1 = [r["loss"] for r in records(one, "train")]
    l2 = [r["loss"] for r in records(os.path.join(work, "two_proc"), "train")]
    check(len(l1) == len(l2) == 24, f"{len(l1)} and {len(l2)} steps")
    loss_diff = max(abs(a - b) / abs(a) for a, b in zip(l1, l2))
    check(loss_diff < 5e-5, f"losses of 1 and 2 processes differ by {loss_diff:.2e} (relative)")
    # The weights are compared through what they compute (the losses above, the evaluation below), not tensor by
    # tensor: where the loss has no gradient, Adam turns float noise into full-size steps (lr x sign): the biases
    # before a batch norm, which removes any constant shift, and the q/k biases along what QK-Norm removes.
    e1, e2 = records(one, "eval")[-1], records(os.path.join(work, "two_proc"), "eval")[-1]
    check(all(abs(e1[k] - e2[k]) < 0.05 for k in ("mIoU", "mAcc", "aAcc")), f"figures: 1 process {e1}, 2 {e2}")
    print(f"2 processes x 4 = 1 process x 8: the 24 losses within {loss_diff:.1e} (relative), evaluation equal")

    # ---- 6. recipe configs ----------------------------------------------------------------------------------
    for name, blocks, params in (("vitb_ade20k", 12, None), ("vitl_ade20k", 24, None)):
        text = run([seg, "--config", os.path.join(src, "configs", "seg", name + ".yaml"), "--dry-run"])
        factor = f"{0.65 ** (blocks + 1):.4g}"
        check(re.search(r"embeddings\s+vit_nepa\.embeddings\.\*\s+\d+\s+" + re.escape(factor), text),
              f"{name}: no embeddings row with factor {factor}:\n{text[-4000:]}")
        check(re.search(r"heads\s+backbone\.fpn.*\s1\s+0\.0001\s", text), f"{name}: no heads row:\n{text[-4000:]}")
        check("160000 steps" in text and "parameters with 150 classes" in text, f"{name}: dry-run summary:\n{text[-1500:]}")
    print("dry-run: BEiT layer-decay tables of vitb_ade20k.yaml and vitl_ade20k.yaml")

    # ---- 7. bad inputs --------------------------------------------------------------------------------------
    broken = os.path.join(work, "broken")
    shutil.copytree(scenes, broken)
    victim = os.path.join(broken, "annotations", "training", sorted(os.listdir(os.path.join(broken, "annotations", "training")))[5])
    os.remove(victim)
    bcfg = os.path.join(work, "broken.yaml")
    open(bcfg, "w").write(CONFIG.format(root=broken))
    out = run([seg, "--config", bcfg, "--output-dir", os.path.join(work, "bad1")], expect=1)
    errors = [l for l in out.splitlines() if " error " in l or l.startswith("error")]
    check(len(errors) == 1 and os.path.basename(victim) in errors[0], "missing annotation:\n" + out)
    out = run([seg, "--config", cfg, "--output-dir", os.path.join(work, "bad2"), "--set", "seg.out_indices=[]"], expect=2)
    check("seg.out_indices" in out, "unset out_indices:\n" + out)
    out = run([seg, "--config", cfg, "--output-dir", os.path.join(work, "bad3"), "--set", "schedule.name=cosine"],
              expect=2)
    check("schedule.name" in out and "poly" in out, "cosine schedule:\n" + out)
    print("bad inputs: missing annotation named, out_indices and schedule refused with exit 2")
    print("OK")


if __name__ == "__main__":
    main()
