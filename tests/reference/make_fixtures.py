"""Writes the parity fixtures the C++ tests compare against (the llm.c pattern).

For each case: <out>/<case>/config.json (the official HF layout), model.safetensors (random weights,
`vit_nepa.` keys, float32), input.safetensors (pixel_values) and expected.safetensors (last_hidden_state,
input_embedding, loss and `grad.<name>` gradients), computed by nepa_reference.py in float64 from the
same float32 weights, so the expectation is the exact value and not another float32 rounding.

Usage: python make_fixtures.py OUT_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nepa_reference import ViTNepaReference, nepa_loss  # noqa: E402

TINY = dict(
    image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, hidden_act="gelu", use_gated_mlp=False, qkv_bias=True, qk_norm=True,
    qk_norm_affine=True, qk_norm_bias=False, layer_norm_eps=1e-12, layerscale_value=1e-5, rope_theta=100.0,
    pos_embed_rescale=2.0, pos_embed_shift=None, pos_embed_jitter=None, is_causal=True, drop_path_prob=0.0,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02, num_prompt_token=0,
)

# name -> (config overrides, input height, input width)
CASES = {
    "tiny_causal_gelu": ({}, 16, 16),
    "tiny_bidirectional": ({"is_causal": False}, 16, 16),
    "swiglu": ({"use_gated_mlp": True, "hidden_act": "silu", "num_hidden_layers": 3}, 16, 16),
    "qk_norm_affine_off": ({"qk_norm_affine": False}, 16, 16),
    "two_blocks_no_layerscale": ({"layerscale_value": None, "qk_norm_bias": True}, 16, 16),
    "non_square": ({"num_attention_heads": 4, "hidden_size": 48, "qkv_bias": False}, 16, 24),
    "no_qk_norm_gelu_tanh": ({"qk_norm": False, "hidden_act": "gelu_new", "rope_theta": 10000.0}, 12, 20),
}

GRADS = [
    "embeddings.patch_embeddings.projection.weight",
    "embeddings.cls_token",
    "encoder.layer.0.attention.attention.q_norm.weight",
    "encoder.layer.0.layer_scale.lambda1",
    "encoder.layer.1.output.dense.weight",
    "encoder.layer.1.intermediate.up_proj.bias",
]


def randomise(model, gen):
    """Every parameter random and O(1)-scaled, so that each one visibly shapes the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("lambda1") or "norm" in name and name.endswith("weight"):
                p.copy_(torch.rand(p.shape, generator=gen) + 0.5)
            elif p.dim() >= 2:
                fan_in = p[0].numel() if p.dim() > 1 else p.numel()
                p.copy_(torch.randn(p.shape, generator=gen) / fan_in**0.5)
            else:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.1)


def write_case(out, name, overrides, h, w, seed):
    c = dict(TINY, **overrides)
    gen = torch.Generator().manual_seed(seed)
    model = ViTNepaReference(c)
    randomise(model, gen)
    pixels = torch.rand(2, c["num_channels"], h, w, generator=gen) * 2 - 1

    weights32 = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    model = model.double()
    hidden, inputs = model(pixels.double())
    loss = nepa_loss(hidden, inputs)
    loss.backward()
    params = dict(model.named_parameters())
    expected = {
        "last_hidden_state": hidden.detach(),
        "input_embedding": inputs.detach(),
        "loss": loss.detach(),
    }
    for g in GRADS:
        if g in params:
            expected["grad." + g] = params[g].grad
    os.makedirs(os.path.join(out, name), exist_ok=True)
    config = dict(c, architectures=["ViTNepaForPreTraining"], model_type="vit_nepa", dtype="float32")
    with open(os.path.join(out, name, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_file({"vit_nepa." + k: v for k, v in weights32.items()}, os.path.join(out, name, "model.safetensors"),
              metadata={"format": "pt"})
    save_file({"pixel_values": pixels.contiguous()}, os.path.join(out, name, "input.safetensors"))
    save_file({k: v.double().contiguous() for k, v in expected.items()}, os.path.join(out, name, "expected.safetensors"))


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    for i, (name, (overrides, h, w)) in enumerate(CASES.items()):
        write_case(out, name, overrides, h, w, seed=1000 + i)
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(CASES) + "\n")
    print(f"wrote {len(CASES)} fixture cases to {out}")


if __name__ == "__main__":
    main()
