"""Writes the recipe fixtures the C++ tests compare against: what the release's training scripts do around the
model, computed by the libraries the release runs on (PyTorch, torchvision, Pillow) or written here from the
release's facts (NEPA-SPEC §3-4, issue "Recipes exactly as the release trains them").

<out>/clip.safetensors      torch.nn.utils.clip_grad_norm_ on a set of gradients: before, after, the total norm;
                            once clipping (max 0.5) and once not (max 1e3).
<out>/adamw.safetensors     torch.optim.AdamW(fused=True) over two groups (weight decay 0.05 and 0) for 5 steps with
                            a per-step, per-group lr and given gradients, one parameter without a gradient at step 2
                            (skipped: its count lags): the parameters after every step and the final moments.
<out>/llrd.safetensors      the learning rate of every parameter group at every step for the release's two
                            layer-wise schedules (schedulers.py, as LambdaLR multiplies each group's initial lr):
                            llrd_cosine_warmup with per-group warmup (Python's round, half to even), llrd_cosine
                            with and without an end value (llrd fixed without one), and no warmup at all.
<out>/ijepa_sched.safetensors  I-JEPA's lr and weight-decay schedules (src/utils/schedulers.py: WarmupCosineSchedule
                            from start_lr, CosineWDSchedule, each advancing its counter before computing, as
                            train.py calls them once per iteration before the update), written from the release's
                            facts: the lr and wd of every update of a few runs, a rising and a falling wd.
<out>/views.safetensors     evaluation views and training crops of generated ImageNet-sized images through
                            torchvision, both on PIL images (the release's pipeline: Pillow's antialiased filters)
                            and on uint8 tensors (resize(antialias=True)): the B eval view (Resize(256) shorter side,
                            bicubic, CenterCrop(224)), the L eval view (Resize((235, 235)), bicubic, CenterCrop(224)),
                            and resized crops at 224 with bilinear (pretraining) and bicubic (fine-tuning) filters.

Usage: python make_recipe_fixtures.py OUT_DIR
"""
import math
import os
import sys

import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as F1
from torchvision.transforms.v2 import functional as F2


# ---- gradient clipping -----------------------------------------------------------------------------------------
def clip_fixture(out):
    gen = torch.Generator().manual_seed(7)
    shapes = [(64, 32), (32,), (3, 4, 5, 5), (1, 1, 8), (100,)]
    scales = [1.0, 0.1, 3.0, 0.01, 0.5]
    grads = [torch.randn(s, generator=gen) * k for s, k in zip(shapes, scales)]
    tensors = {}
    for i, g in enumerate(grads):
        tensors[f"in.{i}"] = g.clone()
    for case, max_norm in (("clipped", 0.5), ("unclipped", 1e3)):
        params = [torch.zeros(s, requires_grad=True) for s in shapes]
        for p, g in zip(params, grads):
            p.grad = g.clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        tensors[f"{case}.max_norm"] = torch.tensor(max_norm, dtype=torch.float64)
        tensors[f"{case}.total"] = total.detach().clone()
        for i, p in enumerate(params):
            tensors[f"{case}.out.{i}"] = p.grad.clone()
    save_file(tensors, os.path.join(out, "clip.safetensors"))


# ---- layer-wise lr schedules (schedulers.py semantics, written from the facts) ------------------------------------
# ---- AdamW ----------------------------------------------------------------------------------------------------
ADAMW_SHAPES = [(16, 8), (8,), (3, 2, 4, 4), (5,)]
ADAMW_GROUPS = [[0, 2], [1, 3]]  # parameter indices of the decay group and the no-decay group
ADAMW_STEPS = 5


def adamw_fixture(out):
    gen = torch.Generator().manual_seed(11)
    init = [torch.randn(s, generator=gen) for s in ADAMW_SHAPES]
    tensors = {f"init.{i}": p.clone() for i, p in enumerate(init)}
    params = [p.clone().requires_grad_() for p in init]
    groups = [{"params": [params[i] for i in ADAMW_GROUPS[0]], "weight_decay": 0.05, "lr": 0.0},
              {"params": [params[i] for i in ADAMW_GROUPS[1]], "weight_decay": 0.0, "lr": 0.0}]
    opt = torch.optim.AdamW(groups, betas=(0.9, 0.95), eps=1e-8, fused=True)
    for step in range(ADAMW_STEPS):
        for g, group in enumerate(opt.param_groups):
            group["lr"] = 1e-2 * (step + 1) / (g + 1)  # changes every step and differs per group
            tensors[f"lr.{step}.{g}"] = torch.tensor(group["lr"], dtype=torch.float64)
        for i, p in enumerate(params):
            if step == 2 and i == 3:
                p.grad = None
                continue
            # Gradients of very different scales, so that eps and the bias corrections matter.
            p.grad = torch.randn(p.shape, generator=gen) * 10.0 ** (-i)
            tensors[f"grad.{step}.{i}"] = p.grad.clone()
        opt.step()
        for i, p in enumerate(params):
            tensors[f"out.{step}.{i}"] = p.detach().clone()
    for i, p in enumerate(params):
        st = opt.state[p]
        tensors[f"exp_avg.{i}"] = st["exp_avg"].clone()
        tensors[f"exp_avg_sq.{i}"] = st["exp_avg_sq"].clone()
        tensors[f"steps.{i}"] = st["step"].reshape(1).to(torch.float64)
    save_file(tensors, os.path.join(out, "adamw.safetensors"))


def llrd_lambda(kind, step, llrd, scale, warmup, total, llrd_end=None):
    """The multiplier of a group's initial lr at `step` (LambdaLR semantics)."""
    if kind == "llrd_cosine" and llrd_end is not None:
        move = 0.5 * (1.0 - math.cos(math.pi * step / max(1, total)))  # half-cosine from llrd to llrd_end
        llrd = llrd + (llrd_end - llrd) * move
    factor = max(float(llrd) ** float(scale), 0.0)
    if kind == "llrd_cosine":
        w = warmup
    elif warmup > 0:
        shorter = max(0, min(int(round(warmup * min(factor, 1.0))), warmup))  # Python's round: half to even
        w = max(1, min(warmup - shorter, total))
    else:
        w = 0
    if step < w:
        return factor * step / max(1, w)
    if step >= total:
        return 0.0
    progress = min(max((step - w) / max(1, total - w), 0.0), 1.0)
    return factor * 0.5 * (1.0 + math.cos(math.pi * progress))


def llrd_fixture(out):
    # Groups as run_image_classification.py forms them for a 12-block model: the embeddings (scale 12), block i
    # (scale 11 - i), the head + final layernorm (head lr, scale 0) and fc_norm (base lr, scale 0).
    scales = list(range(12, -1, -1)) + [0, 0]
    is_head = [0] * 13 + [1, 0]
    base_lr, head_lr = 6e-3, 1e-3
    cases = {
        # name: (kind, total steps, warmup_ratio, llrd, llrd_end)
        "warmup_b": ("llrd_cosine_warmup", 1000, 0.2, 0.65, None),
        "warmup_ties": ("llrd_cosine_warmup", 50, 0.2, 0.5, None),  # W = 10: 10 * 0.5^1 = 5, 10 * 0.5^2 = 2.5, ...
        "warmup_none": ("llrd_cosine_warmup", 100, 0.0, 0.75, None),
        "cosine_fixed": ("llrd_cosine", 400, 0.1, 0.65, None),
        "cosine_ramp": ("llrd_cosine", 400, 0.1, 0.35, 1.0),
    }
    tensors = {"scale": torch.tensor(scales, dtype=torch.int64), "is_head": torch.tensor(is_head, dtype=torch.int64),
               "base_lr": torch.tensor(base_lr, dtype=torch.float64),
               "head_lr": torch.tensor(head_lr, dtype=torch.float64)}
    for name, (kind, total, ratio, llrd, llrd_end) in cases.items():
        warmup = math.ceil(total * ratio)  # transformers' TrainingArguments.get_warmup_steps
        lr = torch.zeros(len(scales), total, dtype=torch.float64)
        for g, (s, h) in enumerate(zip(scales, is_head)):
            for step in range(total):
                lr[g, step] = (head_lr if h else base_lr) * llrd_lambda(kind, step, llrd, s, warmup, total, llrd_end)
        tensors[f"{name}.lr"] = lr
        tensors[f"{name}.spec"] = torch.tensor([total, ratio, llrd, -1.0 if llrd_end is None else llrd_end,
                                                1.0 if kind == "llrd_cosine" else 0.0], dtype=torch.float64)
    save_file(tensors, os.path.join(out, "llrd.safetensors"))


# ---- I-JEPA's schedules (src/utils/schedulers.py semantics, written from the facts) -------------------------------
class IjepaLr:
    def __init__(self, warmup_steps, start_lr, ref_lr, t_max, final_lr):
        self.start, self.ref, self.final, self.warmup = start_lr, ref_lr, final_lr, warmup_steps
        self.t_max, self.count = t_max - warmup_steps, 0

    def step(self):
        self.count += 1
        if self.count < self.warmup:
            return self.start + self.count / max(1, self.warmup) * (self.ref - self.start)
        progress = (self.count - self.warmup) / max(1, self.t_max)
        return max(self.final, self.final + (self.ref - self.final) * 0.5 * (1.0 + math.cos(math.pi * progress)))


class IjepaWd:
    def __init__(self, ref_wd, t_max, final_wd):
        self.ref, self.final, self.t_max, self.count = ref_wd, final_wd, t_max, 0

    def step(self):
        self.count += 1
        wd = self.final + (self.ref - self.final) * 0.5 * (1.0 + math.cos(math.pi * self.count / self.t_max))
        return max(self.final, wd) if self.final <= self.ref else min(self.final, wd)


def ijepa_schedule_fixture(out):
    cases = {
        # name: (total steps, warmup steps, start_lr, ref_lr, final_lr, wd, final_wd)
        "vith14": (300, 40, 2e-4, 1e-3, 1e-6, 0.04, 0.4),  # in1k_vith14_ep300.yaml with one step per epoch
        "short_warmup": (97, 1, 0.0, 5e-4, 0.0, 0.4, 0.04),  # a falling weight decay, a one-step warmup
    }
    tensors = {}
    for name, (total, warmup, start, ref, final, wd, final_wd) in cases.items():
        lr_s, wd_s = IjepaLr(warmup, start, ref, total, final), IjepaWd(wd, total, final_wd)
        tensors[f"{name}.lr"] = torch.tensor([lr_s.step() for _ in range(total)], dtype=torch.float64)
        tensors[f"{name}.wd"] = torch.tensor([wd_s.step() for _ in range(total)], dtype=torch.float64)
        tensors[f"{name}.spec"] = torch.tensor([total, warmup, start, ref, final, wd, final_wd], dtype=torch.float64)
    save_file(tensors, os.path.join(out, "ijepa_sched.safetensors"))


# ---- image views ---------------------------------------------------------------------------------------------------
def natural_image(h, w, channels, seed):
    """Smooth colour fields, hard-edged shapes, fine stripes (where a filter without antialiasing aliases) and
    sensor-like noise: the mix of frequencies a photograph has."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.zeros((h, w, 3))
    for c in range(3):
        a, b, p = rng.uniform(0.005, 0.03, 2).tolist() + [rng.uniform(0, 6.28)]
        img[..., c] = 128 + 60 * np.sin(a * x + p) * np.cos(b * y)
    for _ in range(12):
        cy, cx, r = rng.uniform(0, h), rng.uniform(0, w), rng.uniform(10, min(h, w) / 4)
        img[(y - cy) ** 2 + (x - cx) ** 2 < r * r] = rng.uniform(0, 255, 3)
    y0, x0 = int(h * 0.6), int(w * 0.1)
    stripes = 127.5 + 127.5 * np.sign(np.sin(2 * np.pi * (x + 0.7 * y) / 3.3))
    img[y0:y0 + h // 4, x0:x0 + w // 3] = stripes[y0:y0 + h // 4, x0:x0 + w // 3, None]
    img += rng.normal(0, 6, img.shape)
    img = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return img if channels == 3 else np.ascontiguousarray(img[..., 1])


def views_fixture(out):
    images = [(375, 500, 3), (500, 375, 3), (427, 640, 3), (300, 300, 3), (120, 180, 3), (333, 500, 1)]
    modes = {"bilinear": InterpolationMode.BILINEAR, "bicubic": InterpolationMode.BICUBIC}
    tensors = {"count": torch.tensor(len(images))}
    rng = np.random.default_rng(11)
    for i, (h, w, c) in enumerate(images):
        arr = natural_image(h, w, c, 100 + i)
        tensors[f"image.{i}"] = torch.from_numpy(arr)
        pil = Image.fromarray(arr)
        chw = torch.from_numpy(arr).reshape(h, w, c).permute(2, 0, 1).contiguous()

        def both(name, pil_fn, tensor_fn):
            tensors[f"{name}.pil.{i}"] = torch.from_numpy(np.asarray(pil_fn(pil))).reshape(224, 224, c).contiguous()
            tensors[f"{name}.tensor.{i}"] = tensor_fn(chw).permute(1, 2, 0).contiguous()

        # The release's eval views: B = Resize(256) (shorter side), L = Resize((235, 235)) (crop_pct 0.95).
        for name, size in (("eval_b", 256), ("eval_l", (235, 235))):
            both(name, lambda p: F1.center_crop(F1.resize(p, size, InterpolationMode.BICUBIC), 224),
                 lambda t: F2.center_crop(F2.resize(t, size, InterpolationMode.BICUBIC, antialias=True), 224))
        # Training crops, as RandomResizedCrop applies them: crop the box, resize it to 224.
        boxes = []
        for _ in range(3):
            bw, bh = int(rng.integers(w // 5, w + 1)), int(rng.integers(h // 5, h + 1))
            boxes.append([int(rng.integers(0, w - bw + 1)), int(rng.integers(0, h - bh + 1)), bw, bh])
        tensors[f"boxes.{i}"] = torch.tensor(boxes, dtype=torch.int64)
        for k, (bx, by, bw, bh) in enumerate(boxes):
            for mname, mode in modes.items():
                both(f"crop{k}.{mname}",
                     lambda p: F1.resized_crop(p, by, bx, bh, bw, [224, 224], mode),
                     lambda t: F2.resized_crop(t, by, bx, bh, bw, [224, 224], mode, antialias=True))
    save_file(tensors, os.path.join(out, "views.safetensors"))


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    torch.set_num_threads(1)
    clip_fixture(out)
    adamw_fixture(out)
    llrd_fixture(out)
    ijepa_schedule_fixture(out)
    views_fixture(out)
    print(f"wrote clip, adamw, llrd and views fixtures to {out}")


if __name__ == "__main__":
    main()
