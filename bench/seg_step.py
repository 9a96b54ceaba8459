"""PyTorch-eager side of bench/seg_step (driven by bench_seg_step).

    seg_step.py serve DIR --threads T
        DIR is what bench_seg_step wrote: model.safetensors + config.json (the segmenter under its mmseg/HF names:
        vit_nepa.*, backbone.fpn1/fpn2, decode_head.*, auxiliary_head.*), bench.json (head widths, loss weight,
        optimizer groups, test protocol) and inputs.safetensors (pixels, labels, the inference image).
        One command per line on stdin, one JSON line per command on stdout:
          step     forward + loss + backward + AdamW: {step_ms, forward_ms, backward_ms, optim_ms, loss}
          infer    slide inference of the image: {infer_ms}; the first also writes DIR/eager_map.safetensors
          profile step | profile infer
                   one of them under torch.profiler: {ms, ops: {name: [self CPU ms, calls]}}
    seg_step.py gemm --threads T [--reps R]
        the fp32 GEMM peak of bench/pretrain_step.py, on the same shapes
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "tests", "reference"))
import nepa_eager  # noqa: E402
import pretrain_step  # noqa: E402
import upernet_reference  # noqa: E402

IGNORE = 255


class Segmenter(nn.Module):
    """The bench's eager NEPA backbone (vit_nepa.*) under the repo's UPerNet reference modules (backbone.fpn*,
    decode_head.*, auxiliary_head.*), here in float32 and with BatchNorm in training mode while training. Like
    mmseg's BEiT backbone (final_norm off) the heads read the block outputs, so the final layernorm is not run."""

    def __init__(self, config, spec):
        super().__init__()
        if config.get("rope_grid") is not None:
            sys.exit("seg_step.py: model.rope_grid is not implemented by bench/nepa_eager.py")
        self.config = config
        self.out_indices = list(spec["out_indices"])
        self.vit_nepa = nepa_eager.ViTNepaModel(config)
        heads = upernet_reference.UPerNetReference(config["hidden_size"], spec["channels"], spec["aux_channels"],
                                                   spec["classes"], dropout=0.0)
        for name, child in heads.named_children():  # backbone (the pyramid), decode_head, auxiliary_head
            self.add_module(name, child)

    def features(self, x):
        """The four [B, D, h, w] grids: patch tokens (CLS dropped) after the blocks of out_indices."""
        vit, p = self.vit_nepa, self.config["patch_size"]
        gh, gw = x.shape[2] // p, x.shape[3] // p
        h, _ = vit.embeddings(x)
        cos, sin = vit.rope(gh, gw, x.device) if vit.rope is not None else (None, None)
        grids = []
        for i, layer in enumerate(vit.encoder.layer):
            h = layer(h, cos, sin, self.config["is_causal"])
            if i in self.out_indices:
                grids.append(h[:, -gh * gw:].transpose(1, 2).reshape(h.shape[0], h.shape[2], gh, gw))
        return grids

    def forward(self, x):
        # The reference's own forward (pyramid, UPerHead, FCN head) on this module's submodules of the same names.
        return upernet_reference.UPerNetReference.forward(self, self.features(x))


def seg_cross_entropy(logits, labels, avg_non_ignore):
    """mmseg's CrossEntropyLoss: logits upsampled (bilinear, align_corners False) to the labels, per-pixel loss
    (0 at ignored pixels) summed over all B*H*W pixels, or over the labelled ones with avg_non_ignore."""
    up = F.interpolate(logits, size=labels.shape[1:], mode="bilinear", align_corners=False)
    per_pixel = F.cross_entropy(up, labels, ignore_index=IGNORE, reduction="none")
    return per_pixel.sum() / (labels.ne(IGNORE).sum().clamp_min(1) if avg_non_ignore else labels.numel())


def rescale_size(width, height, scale_long, scale_short):
    """mmcv's keep-ratio rescale to (scale_long, scale_short) -> (w, h)."""
    max_long, max_short = max(scale_long, scale_short), min(scale_long, scale_short)
    f = min(max_long / max(width, height), max_short / min(width, height))
    return max(1, int(width * f + 0.5)), max(1, int(height * f + 0.5))


class Stepper:
    def __init__(self, model_dir):
        from safetensors.torch import load_file

        self.dir = model_dir
        with open(os.path.join(model_dir, "config.json")) as f:
            config = json.load(f)
        with open(os.path.join(model_dir, "bench.json")) as f:
            self.spec = json.load(f)
        self.model = Segmenter(config, self.spec)
        self.model.load_state_dict(load_file(os.path.join(model_dir, "model.safetensors")), strict=True)
        inputs = load_file(os.path.join(model_dir, "inputs.safetensors"))
        self.pixels, self.labels, self.image = inputs["pixels"], inputs["labels"], inputs["image"]
        # The C++ side's groups, by parameter name, with its weight decay and lr; what no group holds (the unused
        # final layernorm) is frozen there and here.
        params = dict(self.model.named_parameters())
        groups = [{"params": [params[n] for n in g["params"]], "weight_decay": g["weight_decay"], "lr": g["lr"]}
                  for g in self.spec["groups"]]
        grouped = {n for g in self.spec["groups"] for n in g["params"]}
        for n, p in params.items():
            p.requires_grad_(n in grouped)
        self.optimizer = torch.optim.AdamW(groups, betas=tuple(self.spec["betas"]), eps=self.spec["eps"])
        self.model.train()
        self.inferences = 0

    def step(self):
        avg, aux_weight = self.spec["avg_non_ignore"], self.spec["aux_weight"]
        t0 = time.perf_counter()
        logits, aux_logits = self.model(self.pixels)
        loss = (seg_cross_entropy(logits, self.labels, avg)
                + aux_weight * seg_cross_entropy(aux_logits, self.labels, avg))
        t1 = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        t2 = time.perf_counter()
        self.optimizer.step()
        t3 = time.perf_counter()
        value = loss.item()
        if value != value or abs(value) == float("inf"):
            sys.exit(f"non-finite loss {value}")
        return {"step_ms": 1e3 * (t3 - t0), "forward_ms": 1e3 * (t1 - t0), "backward_ms": 1e3 * (t2 - t1),
                "optim_ms": 1e3 * (t3 - t2), "loss": value}

    def window_logits(self, crop, patch):
        """The window padded (bottom/right, 0) to a multiple of the patch, the model, its logits resized to the
        padded size and cut back (as mmseg's encode_decode, and segment_image)."""
        h, w = crop.shape[2:]
        ph, pw = -(-h // patch) * patch, -(-w // patch) * patch
        x = crop if (ph, pw) == (h, w) else F.pad(crop, (0, pw - w, 0, ph - h))
        logits = self.model(x)[0]
        if logits.shape[2:] != (ph, pw):
            logits = F.interpolate(logits, size=(ph, pw), mode="bilinear", align_corners=False)
        return logits[:, :, :h, :w]

    def segment(self, image):
        """The class map [H, W] of a uint8 [H, W, C] image: keep-ratio resize to the test scale, normalise, sliding
        windows (logits summed over overlaps / count), logits resized to the image, argmax."""
        e = self.spec["eval"]
        height, width = image.shape[:2]
        self.model.eval()
        with torch.no_grad():
            x = image.permute(2, 0, 1)[None].float()
            w, h = rescale_size(width, height, e["scale_long"], e["scale_short"])
            if (h, w) != (height, width):
                x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False).round_().clamp_(0, 255)
            mean = torch.tensor(e["mean"], dtype=torch.float64).view(1, -1, 1, 1)
            std = torch.tensor(e["std"], dtype=torch.float64).view(1, -1, 1, 1)
            x = ((x.double() / 255 - mean) / std).float()
            crop, stride, patch = e["crop"], e["stride"], e["patch"]
            if crop <= 0:
                logits = self.window_logits(x, patch)
            else:
                logits, count = None, torch.zeros(h, w)
                for gy in range(max(h - crop + stride - 1, 0) // stride + 1):
                    for gx in range(max(w - crop + stride - 1, 0) // stride + 1):
                        y2, x2 = min(gy * stride + crop, h), min(gx * stride + crop, w)
                        y1, x1 = max(y2 - crop, 0), max(x2 - crop, 0)
                        out = self.window_logits(x[:, :, y1:y2, x1:x2], patch)
                        if logits is None:
                            logits = torch.zeros(1, out.shape[1], h, w)
                        logits[:, :, y1:y2, x1:x2] += out
                        count[y1:y2, x1:x2] += 1
                logits = logits / count
            if logits.shape[2:] != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear", align_corners=False)
            classes = logits.argmax(1)[0]
        self.model.train()
        return classes

    def infer(self):
        t0 = time.perf_counter()
        classes = self.segment(self.image)
        ms = 1e3 * (time.perf_counter() - t0)
        if self.inferences == 0:
            from safetensors.torch import save_file

            save_file({"classes": classes.contiguous()}, os.path.join(self.dir, "eager_map.safetensors"))
        self.inferences += 1
        return {"infer_ms": ms}

    def profile(self, what):
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            ms = self.step()["step_ms"] if what == "step" else self.infer()["infer_ms"]
        return {"ms": ms, "ops": {e.key: [e.self_cpu_time_total / 1e3, e.count] for e in prof.key_averages()}}


def emit(obj):
    print(json.dumps(obj), flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["serve", "gemm"])
    ap.add_argument("model", nargs="?", help="serve: the folder bench_seg_step wrote")
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--reps", type=int, default=10, help="gemm: repetitions per shape (best kept)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.mode == "gemm":
        emit(pretrain_step.gemm_peak(args.threads, args.reps))
        return
    if not args.model:
        ap.error("serve needs MODEL_DIR")
    stepper = Stepper(args.model)
    emit({"threads": torch.get_num_threads(), "ready": True})
    commands = {"step": stepper.step, "infer": stepper.infer, "profile step": lambda: stepper.profile("step"),
                "profile infer": lambda: stepper.profile("infer")}
    for line in sys.stdin:
        command = line.strip()
        if command not in commands:
            sys.exit(f"serve: unknown command {command!r}")
        emit(commands[command]())


if __name__ == "__main__":
    main()
