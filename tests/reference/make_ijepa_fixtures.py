"""Writes the I-JEPA parity fixtures (tests/objective/test_ijepa_parity.cpp) under OUT_DIR/ijepa/<case>/, as
make_mae_fixtures.py does: config.json (trunk fields), model.safetensors (float32: the context encoder's HF names,
`target_encoder.*` (other weights: the two must not be mixed up) and `ijepa_predictor.*`), input.safetensors
(pixel_values; context_ids [B, Kc]; target_ids [T, B, Kt]) and expected.safetensors (pred, target, loss,
`grad.<name>` for the context encoder and the predictor, `meta.*` = the predictor's settings), computed by
ijepa_reference.py in float64 from the same float32 weights.

Usage: python make_ijepa_fixtures.py OUT_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ijepa_reference import IjepaReference  # noqa: E402
from make_fixtures import TINY, randomise  # noqa: E402

# The I-JEPA encoder as configs/pretrain/ijepa_*.yaml sets it: no CLS, fixed sin-cos, qkv bias, no RoPE / QK-Norm /
# LayerScale, LayerNorm eps 1e-6, bidirectional.
TRUNK = dict(TINY, use_cls_token=False, use_sincos_pos_embed=True, use_rope=False, qk_norm=False,
             qk_norm_affine=False, layerscale_value=None, qkv_bias=True, layer_norm_eps=1e-6, is_causal=False,
             use_abs_pos_embed=False, use_mask_token=False)
PREDICTOR = dict(depth=2, width=16, heads=2)

# name -> (trunk overrides, predictor overrides, context patches, target blocks x patches, batch, height, width)
CASES = {
    "ijepa_tiny": ({}, {}, 4, (3, 4), 2, 16, 16),
    # The RoPE trunk (its rows per kept patch) with QK-Norm, one channel, a 4 x 6 grid, one target block.
    "ijepa_rope": (dict(use_sincos_pos_embed=False, use_rope=True, qk_norm=True, qk_norm_affine=True, num_channels=1),
                   dict(depth=1, width=24, heads=3), 9, (1, 5), 3, 16, 24),
}


def write_case(out, name, trunk, pred, kc, targets, batch, h, w, seed):
    c, pd = dict(TRUNK, **trunk), dict(PREDICTOR, **pred)
    gen = torch.Generator().manual_seed(seed)
    model = IjepaReference(c, pd)
    randomise(model, gen)
    pixels = torch.rand(batch, c["num_channels"], h, w, generator=gen) * 2 - 1
    n = (h // c["patch_size"]) * (w // c["patch_size"])
    t, kt = targets
    ctx, tgt = [], [[] for _ in range(t)]
    for _ in range(batch):  # context and targets disjoint per image, as the release's (allow_overlap false)
        perm = torch.randperm(n, generator=gen)
        ctx.append(perm[:kc].sort().values)
        for j in range(t):
            tgt[j].append(perm[kc + j * kt: kc + (j + 1) * kt].sort().values)
    ctx_ids = torch.stack(ctx)
    target_ids = [torch.stack(x) for x in tgt]
    weights32 = {}
    for k, v in model.state_dict().items():
        weights32[k[len("trunk."):] if k.startswith("trunk.") else k] = v.detach().float().contiguous()
    model = model.double()
    pred, target, loss = model(pixels.double(), ctx_ids, target_ids)
    loss.backward()
    expected = {"pred": pred.detach(), "target": target.detach(), "loss": loss.detach()}
    for k, p in model.named_parameters():
        if p.grad is not None:
            expected["grad." + (k[len("trunk."):] if k.startswith("trunk.") else k)] = p.grad
    for k in ("depth", "width", "heads"):
        expected["meta." + k] = torch.tensor(float(pd[k]))
    dst = os.path.join(out, "ijepa", name)
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(dict(c, architectures=["ViTNepaForPreTraining"], model_type="vit_nepa", dtype="float32"), f,
                  indent=2, sort_keys=True)
    save_file(weights32, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    save_file({"pixel_values": pixels.contiguous(), "context_ids": ctx_ids.contiguous(),
               "target_ids": torch.stack(target_ids).contiguous()}, os.path.join(dst, "input.safetensors"))
    save_file({k: v.double().contiguous() for k, v in expected.items()}, os.path.join(dst, "expected.safetensors"))


def main():
    out = sys.argv[1]
    for i, (name, args) in enumerate(CASES.items()):
        write_case(out, name, *args, seed=1900 + i)
    with open(os.path.join(out, "ijepa", "cases.txt"), "w") as f:
        f.write("\n".join(CASES) + "\n")


if __name__ == "__main__":
    main()
