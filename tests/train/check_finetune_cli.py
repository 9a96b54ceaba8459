"""End-to-end checks of nepa_finetune (run by ctest).

1. A short pretraining run's export initialises the classifier (only the head reported new), fine-tuning
   runs with the layer-wise lr table, and exports the weights, their EMA and the best EMA in the HF layout. The
   classifier starts at zero (the release's -sft init): the first loss is exactly ln(10).
1b. The pretraining run also exports its EMA (final_ema/, equal to the EMA in its last checkpoint, not to the
   weights); fine-tuning from final_ema/ and from that checkpoint with finetune.init_ema gives the same run, and
   init_ema on an exported folder stops with one line saying what to do instead.
1c-1e. Exports of other objectives fine-tune without restating model.*: an AIM trunk (its architecture read from
   its config.json), an MAE pretraining's encoder (the decoder stays in the checkpoint), an I-JEPA pretraining's
   target encoder (its export, not the context encoder).
2. --eval-only on those exports gives exactly the accuracy the training run logged (weights and EMA).
3. A fine-tuning run stopped by SIGTERM after its first evaluation and resumed ends with the same weights, EMA
   and figures as an uninterrupted run (drop path on: evaluating the EMA must not shift the random draws).
4. Two data-parallel processes (micro-batch 8 each) end with the weights, EMA and test figures of one process
   with micro-batch 16 (drop path and Mixup off: each process draws its own), the sharded evaluation included.

usage: check_finetune_cli.py <nepa_pretrain> <nepa_finetune> <work dir>
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
from safetensors.numpy import load_file

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "dist"))
from ranks import finish, spawn_ranks  # noqa: E402

MODEL = """
model:
  image_size: 16
  patch_size: 4
  num_channels: 3
  hidden_size: 32
  num_hidden_layers: 3
  num_attention_heads: 2
  intermediate_size: 64
data:
  dataset: synthetic
  synthetic_size: 192
  image_size: 16
  num_workers: 1
train:
  total_batch: 16
  micro_batch: 16
  threads: 1
log:
  log_every: 1
"""
PRETRAIN = MODEL + """
schedule:
  max_steps: 20
"""
# The same backbone, bidirectional and with drop path, as fine-tuning uses it.
FINETUNE = MODEL.replace("  intermediate_size: 64\n", "  intermediate_size: 64\n  is_causal: false\n  drop_path_prob: 0.1\n").replace(
    "  threads: 1\n", "  threads: 1\n  ema_decay: 0.9\n") + """
optim:
  base_lr: 4.0e-3
  betas: [0.9, 0.999]
schedule:
  name: llrd_cosine_warmup
  max_steps: 60
  warmup_fraction: 0.2
finetune:
  llrd: 0.75
  eval_every_epochs: 1
"""


def check(cond, msg):
    if not cond:
        sys.exit("FAIL: " + msg)


def run(args, timeout=300):
    r = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout)
    check(r.returncode == 0, f"{' '.join(args)} exited {r.returncode}:\n{r.stdout[-3000:]}")
    return r.stdout


def yaml_model(path):
    """The scalar keys of the model section of a run's config.yaml (values as written), without a YAML library."""
    out, inside = {}, False
    for line in open(path):
        if not line.startswith(" "):
            inside = line.startswith("model:")
            continue
        m = re.match(r"^  (\w+): ([^#\s]+)", line)
        if inside and m:
            out[m.group(1)] = m.group(2)
    return out


def evals(run_dir):
    return [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if '"kind":"eval"' in l]


def eval_only(exe, cfg, weights, out):
    text = run([exe, "--config", cfg, "--eval-only", "--weights", weights, "--output-dir", out])
    m = re.search(r"top-1 ([0-9.]+)% top-5 ([0-9.]+)%", text)
    check(m, "no accuracy line:\n" + text)
    return float(m.group(1)), float(m.group(2))


def two_processes(args, timeout=300):
    """Runs args as 2 data-parallel ranks; returns rank 0's output."""
    codes, outs = finish(spawn_ranks(args[0], args[1:], 2), timeout)
    check(codes == [0, 0], f"2-process fine-tune exited {codes}:\n" + outs[0][-3000:] + outs[1][-2000:])
    return outs[0]


def main():
    pretrain, finetune, work = sys.argv[1:4]
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    pcfg, fcfg = os.path.join(work, "pretrain.yaml"), os.path.join(work, "finetune.yaml")
    open(pcfg, "w").write(PRETRAIN)
    open(fcfg, "w").write(FINETUNE)

    # ---- 1. pretrain -> fine-tune ---------------------------------------------------------------------------
    run([pretrain, "--config", pcfg, "--output-dir", os.path.join(work, "pre")])
    backbone = os.path.join(work, "pre", "final")
    ft_dir = os.path.join(work, "ft")
    out = run([finetune, "--config", fcfg, "--output-dir", ft_dir, "--init", backbone])
    check("new, not in finetune.init (4): classifier.bias, classifier.weight, fc_norm.bias, fc_norm.weight" in out,
          "the init report should name exactly the head:\n" + out[:3000])
    check("layer-wise lr decay (llrd_cosine_warmup" in out and "vit_nepa.encoder.layer.2.*" in out,
          "no lr table:\n" + out[:3000])
    for d in ("final", "final_ema", "best_ema"):
        cfg = json.load(open(os.path.join(ft_dir, d, "config.json")))
        check(cfg["architectures"] == ["ViTNepaForImageClassification"], f"{d}: {cfg['architectures']}")
        check(len(cfg["id2label"]) == 10, f"{d}: id2label has {len(cfg['id2label'])} entries")
        keys = load_file(os.path.join(ft_dir, d, "model.safetensors")).keys()
        check({"classifier.weight", "classifier.bias", "fc_norm.weight", "fc_norm.bias"} <= set(keys), f"{d}: head keys")
        check(all(k.startswith(("vit_nepa.", "fc_norm.", "classifier.")) for k in keys), f"{d}: stray keys")
    check("classifier head init: zeros" in out, "no head-init line:\n" + out[:3000])
    first = [json.loads(l) for l in open(os.path.join(ft_dir, "metrics.jsonl")) if '"kind":"train"' in l][0]
    check(first["step"] == 1 and abs(first["loss"] - np.log(10)) < 1e-6,
          f"a zero classifier gives uniform logits, loss ln(10) = {np.log(10):.6f}; the first step logged {first}")
    e = evals(ft_dir)
    check(len(e) >= 2, f"{len(e)} evaluations (expected one per epoch and one at the end)")
    last = e[-1]
    print(f"fine-tuned: top-1 {last['top1']:.2f} / EMA {last['ema_top1']:.2f} after {last['step']} steps")

    # ---- 1b. the pretraining EMA ------------------------------------------------------------------------------
    ckpt_dir = os.path.join(work, "pre", "checkpoints")
    ckpt = os.path.join(ckpt_dir, sorted(f for f in os.listdir(ckpt_dir) if f.endswith(".safetensors"))[-1])
    saved = load_file(ckpt)
    ema = load_file(os.path.join(work, "pre", "final_ema", "model.safetensors"))
    plain = load_file(os.path.join(backbone, "model.safetensors"))
    check(ema.keys() == plain.keys(), "final_ema holds other tensors than final")
    check(all(np.array_equal(ema[k], saved["extra.ema." + k[len("vit_nepa."):]]) for k in ema),
          "final_ema differs from the EMA in the last checkpoint")
    check(max(float(np.abs(ema[k] - plain[k]).max()) for k in ema) > 0, "final_ema equals the final weights")
    short = ["--set", "schedule.max_steps=5", "--set", "finetune.eval_every_epochs=0"]
    run([finetune, "--config", fcfg, "--output-dir", os.path.join(work, "from_ema"), "--init",
         os.path.join(work, "pre", "final_ema")] + short)
    out = run([finetune, "--config", fcfg, "--output-dir", os.path.join(work, "from_ckpt_ema"), "--init", ckpt,
               "--set", "finetune.init_ema=true"] + short)
    check("(its EMA weights)" in out, "init_ema not reported:\n" + out[:2000])
    a = load_file(os.path.join(work, "from_ema", "final", "model.safetensors"))
    b = load_file(os.path.join(work, "from_ckpt_ema", "final", "model.safetensors"))
    check(all(np.array_equal(a[k], b[k]) for k in a), "final_ema/ and the checkpoint's EMA start different runs")
    r = subprocess.run([finetune, "--config", fcfg, "--output-dir", os.path.join(work, "bad_ema"), "--init", backbone,
                        "--set", "finetune.init_ema=true"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    check(r.returncode != 0 and "final_ema/" in r.stdout and "not a training checkpoint" in r.stdout,
          f"init_ema on an export: exit {r.returncode}\n{r.stdout[-1500:]}")
    print("pretraining EMA: final_ema/ = the checkpoint's EMA; both start the same fine-tune; misuse named")

    # ---- 1c. a backbone of another architecture (AIM's trunk): taken from its config.json ---------------------
    tool = os.path.join(os.path.dirname(finetune), "nepa_tool")
    aim = os.path.join(work, "aim_trunk")
    run([tool, "init", "--config", pcfg, "--output", aim, "--set", "model.use_cls_token=false", "--set",
         "model.use_sincos_pos_embed=true", "--set", "model.use_rope=false", "--set", "model.qk_norm=false",
         "--set", "model.pos_embed_rescale=null"])
    out = run([finetune, "--config", fcfg, "--output-dir", os.path.join(work, "from_aim"), "--init", aim] + short)
    line = next((l for l in out.splitlines() if "keys taken from finetune.init's config.json" in l), "")
    for change in ("model.qk_norm: true -> false", "model.use_rope: true -> false",
                   "model.use_cls_token: true -> false", "model.use_sincos_pos_embed: false -> true"):
        check(change in line, f"'{change}' not in the adoption line:\n{line or out[:3000]}")
    check("new, not in finetune.init (4): classifier.bias, classifier.weight, fc_norm.bias, fc_norm.weight" in out,
          "the AIM trunk should load whole, only the head new:\n" + out[:3000])
    saved = yaml_model(os.path.join(work, "from_aim", "config.yaml"))
    check(saved.get("use_cls_token") == "false" and saved.get("use_sincos_pos_embed") == "true",
          f"the run's config.yaml should hold the adopted architecture: {saved}")
    print("an AIM trunk fine-tunes without restating model.*: " + line.split("config.json", 1)[-1].strip())

    # ---- 1d. an MAE pretraining: the decoder stays behind, the encoder fine-tunes ------------------------------
    mae = os.path.join(work, "mae_pre")
    out = run([pretrain, "--config", pcfg, "--output-dir", mae, "--set", "objective.name=mae", "--set",
               "objective.mae.decoder_width=16", "--set", "objective.mae.decoder_depth=1", "--set",
               "objective.mae.decoder_heads=2", "--set", "model.is_causal=false", "--set", "schedule.max_steps=6"])
    check("visible 0.25" in out, "the MAE run should log the visible share (4 of 16 patches):\n" + out[-2000:])
    exported = load_file(os.path.join(mae, "final", "model.safetensors"))
    check(not any("decoder" in k for k in exported), "the MAE export should hold the encoder only")
    ckpt_keys = load_file(os.path.join(mae, "checkpoints", "step_00000006.safetensors")).keys()
    check(any(k.startswith("model.mae_decoder.") for k in ckpt_keys), "the decoder should be in the checkpoint")
    out = run([finetune, "--config", fcfg, "--output-dir", os.path.join(work, "from_mae"), "--init",
               os.path.join(mae, "final")] + short)
    check("new, not in finetune.init (4): classifier.bias, classifier.weight, fc_norm.bias, fc_norm.weight" in out,
          "the MAE encoder should load whole, only the head new:\n" + out[:3000])
    print("an MAE pretraining exports its encoder alone (decoder in the checkpoint) and it fine-tunes")

    # ---- 1e. an I-JEPA pretraining: the export is the target encoder (the checkpoint's, not the context encoder)
    ijepa = os.path.join(work, "ijepa_pre")
    out = run([pretrain, "--config", pcfg, "--output-dir", ijepa] + [x for s in (
        "objective.name=ijepa", "objective.ijepa.num_pred_masks=2", "objective.ijepa.pred_mask_scale=[0.25, 0.3]",
        "objective.ijepa.min_keep=1", "objective.ijepa.predictor_depth=1", "objective.ijepa.predictor_width=16",
        "objective.ijepa.predictor_heads=2", "objective.ijepa.ema=[0.5, 0.6]", "model.use_cls_token=false",
        "model.use_sincos_pos_embed=true", "model.use_rope=false", "model.qk_norm=false",
        "model.pos_embed_rescale=null", "model.is_causal=false", "train.ema=false", "schedule.max_steps=6")
        for x in ("--set", s)])
    exported = load_file(os.path.join(ijepa, "final", "model.safetensors"))
    saved = load_file(os.path.join(ijepa, "checkpoints", "step_00000006.safetensors"))
    check(all(np.array_equal(v, saved["model.target_encoder." + k[len("vit_nepa."):]]) for k, v in exported.items()),
          "the I-JEPA export should be the checkpoint's target encoder")
    check(max(float(np.abs(v - saved["model." + k[len("vit_nepa."):]]).max()) for k, v in exported.items()) > 0,
          "the I-JEPA export equals the context encoder: it should be the target")
    out = run([finetune, "--config", fcfg, "--output-dir", os.path.join(work, "from_ijepa"), "--init",
               os.path.join(ijepa, "final")] + short)
    check("new, not in finetune.init (4): classifier.bias, classifier.weight, fc_norm.bias, fc_norm.weight" in out,
          "the I-JEPA target encoder should load whole, only the head new:\n" + out[:3000])
    print("an I-JEPA pretraining exports its target encoder (not the context encoder) and it fine-tunes")

    # ---- 2. --eval-only reproduces the logged figures --------------------------------------------------------
    for weights, key in (("final", "top1"), ("final_ema", "ema_top1")):
        top1, top5 = eval_only(finetune, fcfg, os.path.join(ft_dir, weights), os.path.join(work, "eval_" + weights))
        check(abs(top1 - last[key]) < 0.006 and abs(top5 - last[key.replace("1", "5")]) < 0.006,
              f"--eval-only {weights}: {top1}/{top5} vs logged {last[key]}/{last[key.replace('1', '5')]}")
        check(os.path.exists(os.path.join(work, "eval_" + weights, "eval_per_class.csv")), "no per-class csv")
    best = max(x["ema_top1"] for x in e)
    top1, _ = eval_only(finetune, fcfg, os.path.join(ft_dir, "best_ema"), os.path.join(work, "eval_best"))
    check(abs(top1 - best) < 0.006, f"best_ema evaluates to {top1}, the best logged EMA top-1 was {best}")
    print(f"--eval-only: final {last['top1']:.2f}, final_ema {last['ema_top1']:.2f}, best_ema {best:.2f} reproduced")

    # ---- 3. SIGTERM + resume = uninterrupted ------------------------------------------------------------------
    stopped = os.path.join(work, "stopped")
    args = [finetune, "--config", fcfg, "--init", backbone, "--set", "schedule.max_steps=400",
            "--set", "finetune.eval_every_epochs=5"]  # 16 steps an epoch: evaluations at steps 80, 160, ...
    run(args + ["--output-dir", os.path.join(work, "whole")])
    p = subprocess.Popen(args + ["--output-dir", stopped], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    metrics = os.path.join(stopped, "metrics.jsonl")
    deadline = time.time() + 120
    while time.time() < deadline and not (os.path.exists(metrics) and len(open(metrics).readlines()) >= 100):
        time.sleep(0.01)
    p.send_signal(signal.SIGTERM)
    out, _ = p.communicate(timeout=120)
    check(p.returncode == 0, f"SIGTERM: exit {p.returncode}\n{out[-2000:]}")
    steps_done = len([l for l in open(metrics) if '"kind":"train"' in l])
    check(steps_done < 400, "the run finished before the signal")
    check(len(evals(stopped)) >= 1, "the run stopped before its first evaluation")
    run(args + ["--output-dir", stopped, "--resume", "auto"])
    for d in ("final", "final_ema"):
        a = load_file(os.path.join(work, "whole", d, "model.safetensors"))
        b = load_file(os.path.join(stopped, d, "model.safetensors"))
        diff = max(float(np.abs(a[k] - b[k]).max()) for k in a)
        check(diff == 0.0, f"{d}: resumed run differs by {diff}")
    check(evals(stopped)[-1] == evals(os.path.join(work, "whole"))[-1], "final evaluation differs after resume")
    print(f"stopped at step {steps_done} of 400 and resumed: weights, EMA and final figures identical")

    # ---- 4. 2 processes x 8 = 1 process x 16 -------------------------------------------------------------------
    # Drop path, RoPE rescaling and Mixup/CutMix off: each process draws its own masks, scales (train.seed + rank)
    # and mixing weights (as timm's ranks do).
    args = [finetune, "--config", fcfg, "--init", backbone, "--set", "model.drop_path_prob=0.0",
            "--set", "model.pos_embed_rescale=null", "--set", "finetune.mixup_alpha=0",
            "--set", "finetune.cutmix_alpha=0"]
    one_out = run(args + ["--output-dir", os.path.join(work, "one_proc")])
    out = two_processes(args + ["--output-dir", os.path.join(work, "two_proc"), "--set", "train.micro_batch=8"])
    check("data parallel: 2 processes (gloo)" in out, "no data-parallel line:\n" + out[-3000:])
    counted = [re.findall(r"eval \(([0-9]+) images\)", o) for o in (one_out, out)]
    check(counted[0] and counted[0] == counted[1], f"evaluated images: 1 process {counted[0]}, 2 processes {counted[1]}")
    worst = 0.0
    for d in ("final", "final_ema"):
        a = load_file(os.path.join(work, "one_proc", d, "model.safetensors"))
        b = load_file(os.path.join(work, "two_proc", d, "model.safetensors"))
        check(a.keys() == b.keys(), f"{d}: different tensors")
        worst = max([worst] + [float(np.abs(a[k] - b[k]).max()) for k in a])
    check(worst <= 1e-5, f"2 processes differ from 1 process by {worst:.2e} in the weights or their EMA")
    e1, e2 = evals(os.path.join(work, "one_proc"))[-1], evals(os.path.join(work, "two_proc"))[-1]
    check(all(abs(e1[k] - e2[k]) < 0.006 for k in ("top1", "top5", "ema_top1", "ema_top5")),
          f"evaluation differs: 1 process {e1}, 2 processes {e2}")
    print(f"2 processes x 8 = 1 process x 16: weights and EMA within {worst:.1e}, top-1 {e2['top1']:.2f} "
          f"/ EMA {e2['ema_top1']:.2f} in both")
    print("OK")


if __name__ == "__main__":
    main()
