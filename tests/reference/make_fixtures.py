"""Writes the parity fixtures the C++ tests compare against (the llm.c pattern).

For each case: <out>/<case>/config.json (the official HF layout), model.safetensors (random weights,
`vit_nepa.` keys, float32), input.safetensors (pixel_values; `labels` for classifier cases) and
expected.safetensors (last_hidden_state, input_embedding and the NEPA loss, or the logits and the cross-entropy
loss for classifier cases; `grad.<name>` gradients; `meta.training` = 1 when the C++ model must run in training
mode), computed by nepa_reference.py in float64 from the same float32 weights, so the expectation is the exact
value and not another float32 rounding.

Training-mode cases use settings under which training mode is deterministic yet every training-only path runs:
RoPE rescale 1.0, shift 0.0 and jitter 1.0 (each draws a random number and gets the identity), drop path 0, and
hidden dropout 0 (must equal the eval path) or 1 (each dropped branch vanishes: only the final LayerNorm's bias is
left, which is where the release's dropout placement shows).

Usage: python make_fixtures.py OUT_DIR
"""
import json
import os
import sys

import torch
from safetensors.torch import save_file
from upernet_reference import UPerNetReference
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from nepa_reference import ViTNepaClassifierReference, ViTNepaReference, nepa_loss  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
with open(os.path.join(HERE, "..", "data", "hf-configs", "nepa-base-patch14-224.json")) as f:
    BASE = {k: v for k, v in json.load(f).items()
            if k not in ("architectures", "model_type", "dtype", "transformers_version", "add_pooling_layer")}
IDENTITY_AUG = dict(pos_embed_rescale=1.0, pos_embed_shift=0.0, pos_embed_jitter=1.0, drop_path_prob=0.0)

TINY = dict(
    image_size=16, patch_size=4, num_channels=3, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
    intermediate_size=64, hidden_act="gelu", use_gated_mlp=False, qkv_bias=True, qk_norm=True,
    qk_norm_affine=True, qk_norm_bias=False, layer_norm_eps=1e-12, layerscale_value=1e-5, rope_theta=100.0,
    pos_embed_rescale=2.0, pos_embed_shift=None, pos_embed_jitter=None, is_causal=True, drop_path_prob=0.0,
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02, num_prompt_token=0,
)

# name -> (config overrides, input height, input width[, options]); options: base (config the overrides apply to),
# training, classes (a classifier case), all_grads (every parameter's gradient), batch.
CASES = {
    "tiny_causal_gelu": ({}, 16, 16),
    "tiny_bidirectional": ({"is_causal": False}, 16, 16),
    "swiglu": ({"use_gated_mlp": True, "hidden_act": "silu", "num_hidden_layers": 3}, 16, 16),
    "qk_norm_affine_off": ({"qk_norm_affine": False}, 16, 16),
    "two_blocks_no_layerscale": ({"layerscale_value": None, "qk_norm_bias": True}, 16, 16),
    "non_square": ({"num_attention_heads": 4, "hidden_size": 48, "qkv_bias": False}, 16, 24),
    "no_qk_norm_gelu_tanh": ({"qk_norm": False, "hidden_act": "gelu_new", "rope_theta": 10000.0}, 12, 20),
    "training_mode": (IDENTITY_AUG, 16, 16, dict(training=True, all_grads=True)),
    "training_dropout_one": (dict(IDENTITY_AUG, hidden_dropout_prob=1.0), 16, 16, dict(training=True)),
    "classifier_head": ({"is_causal": False, "num_hidden_layers": 3}, 16, 16, dict(classes=5, all_grads=True, batch=4)),
    "base_224_all_grads": ({}, 224, 224, dict(base=BASE, all_grads=True, batch=1)),
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


def write_case(out, name, overrides, h, w, seed, opts):
    c = dict(opts.get("base", TINY), **overrides)
    training, classes = opts.get("training", False), opts.get("classes", 0)
    gen = torch.Generator().manual_seed(seed)
    model = ViTNepaClassifierReference(c, classes) if classes else ViTNepaReference(c)
    randomise(model, gen)
    pixels = torch.rand(opts.get("batch", 2), c["num_channels"], h, w, generator=gen) * 2 - 1
    inputs = {"pixel_values": pixels.contiguous()}

    weights32 = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    model = model.double()
    if classes:
        labels = torch.randint(0, classes, (pixels.shape[0],), generator=gen)
        inputs["labels"] = labels
        logits = model(pixels.double())
        loss = nn.functional.cross_entropy(logits, labels)
        expected = {"logits": logits.detach()}
    else:
        hidden, embedding = model(pixels.double(), training=training)
        loss = nepa_loss(hidden, embedding)
        expected = {"last_hidden_state": hidden.detach(), "input_embedding": embedding.detach()}
        weights32 = {"vit_nepa." + k: v for k, v in weights32.items()}
    loss.backward()
    expected["loss"] = loss.detach()
    expected["meta.training"] = torch.tensor(1.0 if training else 0.0)
    params = dict(model.named_parameters())
    for g in (params if opts.get("all_grads") else GRADS if not training else ["layernorm.bias"]):
        if g in params:
            expected["grad." + g] = params[g].grad
    os.makedirs(os.path.join(out, name), exist_ok=True)
    arch = "ViTNepaForImageClassification" if classes else "ViTNepaForPreTraining"
    config = dict(c, architectures=[arch], model_type="vit_nepa", dtype="float32")
    if classes:
        config["id2label"] = {str(i): f"class_{i}" for i in range(classes)}
    with open(os.path.join(out, name, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
    save_file(weights32, os.path.join(out, name, "model.safetensors"), metadata={"format": "pt"})
    save_file(inputs, os.path.join(out, name, "input.safetensors"))
    # Gradients of the base case (86 M values) are stored in float32: the float64 truth rounded once.
    big = opts.get("base") is not None
    save_file({k: (v.float() if big and k.startswith("grad.") else v.double()).contiguous() for k, v in expected.items()},
              os.path.join(out, name, "expected.safetensors"))


def write_upernet_case(out, seed):
    """UPerNet (tests/reference/upernet_reference.py) on four random 16-wide 5x5 grids: eval-mode outputs, and
    train-mode outputs, running statistics and every parameter's gradient of sum(logits * R) + 0.4 sum(aux * S)."""
    gen = torch.Generator().manual_seed(seed)
    model = UPerNetReference(dim=16, channels=8, aux_channels=6, classes=5)
    randomise(model, gen)
    with torch.no_grad():
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=gen) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=gen) + 0.5)
    grids = [torch.randn(2, 16, 5, 5, generator=gen) for _ in range(4)]
    inputs = {f"grid{i}": g.contiguous() for i, g in enumerate(grids)}
    weights32 = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    model = model.double()
    model.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in weights32.items()})
    expected = {}
    model.eval()
    with torch.no_grad():
        logits, aux = model([g.double() for g in grids])
    expected["eval.logits"], expected["eval.aux_logits"] = logits, aux
    model.train()
    logits, aux = model([g.double() for g in grids])
    r, s = torch.randn(logits.shape, generator=gen), torch.randn(aux.shape, generator=gen)
    inputs["weights_main"], inputs["weights_aux"] = r, s
    ((logits * r.double()).sum() + 0.4 * (aux * s.double()).sum()).backward()
    expected["train.logits"], expected["train.aux_logits"] = logits.detach(), aux.detach()
    for name, p in model.named_parameters():
        expected["grad." + name] = p.grad
    for name, b in model.named_buffers():
        if "running" in name:
            expected["state." + name] = b
    os.makedirs(os.path.join(out, "upernet"), exist_ok=True)
    save_file(weights32, os.path.join(out, "upernet", "model.safetensors"))
    save_file(inputs, os.path.join(out, "upernet", "input.safetensors"))
    save_file({k: v.double().contiguous() for k, v in expected.items()}, os.path.join(out, "upernet", "expected.safetensors"))


def main():
    out = sys.argv[1]
    torch.set_num_threads(1)
    write_upernet_case(out, 4242)
    for i, (name, case) in enumerate(CASES.items()):
        overrides, h, w = case[:3]
        write_case(out, name, overrides, h, w, 1000 + i, case[3] if len(case) > 3 else {})
    with open(os.path.join(out, "cases.txt"), "w") as f:
        f.write("\n".join(CASES) + "\n")
    print(f"wrote {len(CASES)} fixture cases to {out}")


if __name__ == "__main__":
    main()
