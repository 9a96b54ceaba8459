"""Writes the AIM parity fixtures (tests/objective/test_aim_parity.cpp) under OUT_DIR/aim/<case>/, the
llm.c pattern of make_fixtures.py: config.json (model fields, HF names), model.safetensors (float32 weights: the
trunk's HF names and `aim_head.*`), input.safetensors (pixel_values; prefix_lengths, one fixed length per image)
and expected.safetensors (last_hidden_state, pred, loss, `grad.<name>` for every parameter, and `meta.*` = the
head's settings), computed by aim_reference.py in float64 from the same float32 weights.

Usage: python make_aim_fixtures.py OUT_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from aim_reference import AimReference  # noqa: E402
from make_fixtures import TINY, randomise  # noqa: E402

# The AIM trunk as configs/pretrain/aim_*.yaml sets it (the release's switches that the backbone has): no CLS,
# sin-cos positions, no RoPE, no QK-Norm, no LayerScale, no qkv bias, LayerNorm eps 1e-6, bidirectional.
AIM_TRUNK = dict(TINY, use_cls_token=False, use_sincos_pos_embed=True, use_rope=False, qk_norm=False,
                 qk_norm_affine=False, layerscale_value=None, qkv_bias=False, layer_norm_eps=1e-6, is_causal=False,
                 use_abs_pos_embed=False, use_mask_token=False)
HEAD = dict(blocks=2, width=24, ratio=2, eps=1e-6, pos_embed=True, norm_pix_loss=True, norm_pix_eps=1e-6)

# name -> (trunk overrides, head overrides, prefix lengths per image, input height, width)
CASES = {
    # 16 patches; s = 1 (the smallest), 6, 15 (one patch predicted).
    "aim_tiny": ({}, {}, [1, 6, 15], 16, 16),
    # The RoPE ablation on the NEPA attention (QK-Norm, LayerScale), raw pixels, no head positions, 4 x 6 grid.
    "aim_rope_raw_pixels": (dict(use_sincos_pos_embed=False, use_rope=True, qk_norm=True, qk_norm_affine=True,
                                 layerscale_value=1e-5, num_channels=1),
                            dict(norm_pix_loss=False, pos_embed=False, blocks=1), [3, 0, 20], 16, 24),
}


def write_case(out, name, trunk, head, prefix, h, w, seed):
    c, hd = dict(AIM_TRUNK, **trunk), dict(HEAD, **head)
    gen = torch.Generator().manual_seed(seed)
    model = AimReference(c, hd)
    randomise(model, gen)
    pixels = torch.rand(len(prefix), c["num_channels"], h, w, generator=gen) * 2 - 1
    weights32 = {}
    for k, v in model.state_dict().items():
        weights32[k[len("trunk."):] if k.startswith("trunk.") else k] = v.detach().float().contiguous()
    model = model.double()
    hidden, pred, loss = model(pixels.double(), prefix)
    loss.backward()
    expected = {"last_hidden_state": hidden.detach(), "pred": pred.detach(), "loss": loss.detach()}
    for k, p in model.named_parameters():
        expected["grad." + (k[len("trunk."):] if k.startswith("trunk.") else k)] = p.grad
    for k in ("blocks", "width", "ratio", "eps", "norm_pix_eps"):
        expected["meta." + k] = torch.tensor(float(hd[k]))
    for k in ("pos_embed", "norm_pix_loss"):
        expected["meta." + k] = torch.tensor(1.0 if hd[k] else 0.0)
    d = os.path.join(out, "aim", name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(dict(c, architectures=["ViTNepaForPreTraining"], model_type="vit_nepa", dtype="float32"), f,
                  indent=2, sort_keys=True)
    save_file(weights32, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    save_file({"pixel_values": pixels.contiguous(), "prefix_lengths": torch.tensor(prefix, dtype=torch.int64)},
              os.path.join(d, "input.safetensors"))
    save_file({k: v.double().contiguous() for k, v in expected.items()}, os.path.join(d, "expected.safetensors"))


def main():
    out = sys.argv[1]
    for i, (name, (trunk, head, prefix, h, w)) in enumerate(CASES.items()):
        write_case(out, name, trunk, head, prefix, h, w, seed=1700 + i)
    with open(os.path.join(out, "aim", "cases.txt"), "w") as f:
        f.write("\n".join(CASES) + "\n")


if __name__ == "__main__":
    main()
