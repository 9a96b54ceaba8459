"""Writes the MAE parity fixtures (tests/objective/test_mae_parity.cpp) under OUT_DIR/mae/<case>/, as
make_aim_fixtures.py does: config.json (trunk fields, HF names), model.safetensors (float32 weights: the trunk's
HF names and `mae_decoder.*`), input.safetensors (pixel_values; ids_keep, the visible patches of each image in
encoder order) and expected.safetensors (latent, pred, loss, `grad.<name>` for every parameter, `meta.*` = the
decoder's settings), computed by mae_reference.py in float64 from the same float32 weights.

Usage: python make_mae_fixtures.py OUT_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mae_reference import MaeReference  # noqa: E402
from make_fixtures import TINY, randomise  # noqa: E402

# The MAE encoder as configs/pretrain/mae_*.yaml sets it (models_mae.py): CLS token, fixed sin-cos positions,
# qkv bias, no RoPE, no QK-Norm, no LayerScale, LayerNorm eps 1e-6, bidirectional.
MAE_TRUNK = dict(TINY, use_cls_token=True, use_sincos_pos_embed=True, use_rope=False, qk_norm=False,
                 qk_norm_affine=False, layerscale_value=None, qkv_bias=True, layer_norm_eps=1e-6, is_causal=False,
                 use_abs_pos_embed=False, use_mask_token=False)
DECODER = dict(depth=2, width=16, heads=2, ratio=2, eps=1e-6, norm_pix_loss=True, norm_pix_eps=1e-6)

# name -> (trunk overrides, decoder overrides, kept patches per image, batch, input height, width)
CASES = {
    # 16 patches, 4 kept (mask ratio 0.75), as the release's encoder and decoder.
    "mae_tiny": ({}, {}, 4, 3, 16, 16),
    # The NEPA switches on an MAE (the paper's MAE ablation): RoPE rows of the kept patches, QK-Norm, LayerScale;
    # no CLS token, raw pixels, one channel, a 4 x 6 grid.
    "mae_rope_no_cls_raw": (dict(use_sincos_pos_embed=False, use_rope=True, qk_norm=True, qk_norm_affine=True,
                                 layerscale_value=1e-5, use_cls_token=False, num_channels=1),
                            dict(norm_pix_loss=False, depth=1), 6, 2, 16, 24),
    # A learned position table (use_abs_pos_embed) gathered with the patches, CLS row on the CLS token.
    "mae_learned_pos": (dict(use_sincos_pos_embed=False, use_abs_pos_embed=True), dict(width=24, heads=3), 5, 2,
                        16, 16),
}


def write_case(out, name, trunk, dec, keep, batch, h, w, seed):
    c, d = dict(MAE_TRUNK, **trunk), dict(DECODER, **dec)
    gen = torch.Generator().manual_seed(seed)
    model = MaeReference(c, d)
    randomise(model, gen)
    pixels = torch.rand(batch, c["num_channels"], h, w, generator=gen) * 2 - 1
    n = (h // c["patch_size"]) * (w // c["patch_size"])
    ids_keep = torch.stack([torch.randperm(n, generator=gen)[:keep] for _ in range(batch)])
    weights32 = {}
    for k, v in model.state_dict().items():
        weights32[k[len("trunk."):] if k.startswith("trunk.") else k] = v.detach().float().contiguous()
    model = model.double()
    latent, pred, loss = model(pixels.double(), ids_keep)
    loss.backward()
    expected = {"latent": latent.detach(), "pred": pred.detach(), "loss": loss.detach()}
    for k, p in model.named_parameters():
        expected["grad." + (k[len("trunk."):] if k.startswith("trunk.") else k)] = p.grad
    for k in ("depth", "width", "heads", "ratio", "eps", "norm_pix_eps"):
        expected["meta." + k] = torch.tensor(float(d[k]))
    expected["meta.norm_pix_loss"] = torch.tensor(1.0 if d["norm_pix_loss"] else 0.0)
    dst = os.path.join(out, "mae", name)
    os.makedirs(dst, exist_ok=True)
    with open(os.path.join(dst, "config.json"), "w") as f:
        json.dump(dict(c, image_size=h, architectures=["ViTNepaForPreTraining"], model_type="vit_nepa",
                       dtype="float32"), f, indent=2, sort_keys=True)
    save_file(weights32, os.path.join(dst, "model.safetensors"), metadata={"format": "pt"})
    save_file({"pixel_values": pixels.contiguous(), "ids_keep": ids_keep.contiguous()},
              os.path.join(dst, "input.safetensors"))
    save_file({k: v.double().contiguous() for k, v in expected.items()}, os.path.join(dst, "expected.safetensors"))


def main():
    out = sys.argv[1]
    for i, (name, (trunk, dec, keep, batch, h, w)) in enumerate(CASES.items()):
        write_case(out, name, trunk, dec, keep, batch, h, w, seed=1800 + i)
    with open(os.path.join(out, "mae", "cases.txt"), "w") as f:
        f.write("\n".join(CASES) + "\n")


if __name__ == "__main__":
    main()
