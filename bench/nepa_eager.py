"""The NEPA backbone, loss and optimizer the way the public PyTorch release runs them: the speed baseline of
bench/pretrain_step (eager mode, fused ATen ops, nothing tuned beyond what the release does).

Module tree and parameter names follow the Hugging Face `vit_nepa` layout (NEPA-SPEC §7), so
`load_state_dict(strict=True)` takes our model.safetensors once the `vit_nepa.` prefix is stripped.

    python bench/nepa_eager.py --check MODEL_DIR
compares the forward pass (eval mode) with the float64 reference tests/reference/nepa_reference.py on the
folder's weights, so that the timed comparison is known to be of the same model.
"""
import argparse
import json
import math
import os
import sys

import torch
import torch.nn.functional as F
from torch import nn

PREFIX = "vit_nepa."


def config_get(c, key, default):
    # The release's config.json leaves out the ablation switches our writer adds; their defaults are the release's.
    v = c.get(key, default)
    return default if v is None and default is not None else v


class LayerScale(nn.Module):
    def __init__(self, dim, value):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((dim,), float(value)))

    def forward(self, x):
        return x * self.lambda1


class RopePositionEmbedding(nn.Module):
    """2-D axial RoPE (NEPA-SPEC §1). Tables are rebuilt every forward, as the release does, because the
    training-time rescale draws a new factor each call."""

    def __init__(self, c):
        super().__init__()
        self.head_dim = c["hidden_size"] // c["num_attention_heads"]
        self.theta = c["rope_theta"]
        self.shift = c.get("pos_embed_shift")
        self.jitter = c.get("pos_embed_jitter")
        self.rescale = c.get("pos_embed_rescale")

    def forward(self, gh, gw, device):
        f32 = dict(dtype=torch.float32, device=device)
        ys = (torch.arange(gh, **f32) + 0.5) / gh * 2 - 1
        xs = (torch.arange(gw, **f32) + 0.5) / gw * 2 - 1
        coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).flatten(0, 1)  # [N, 2] (y, x)
        if self.training:
            if self.shift:
                coords = coords + torch.empty(1, 2, **f32).uniform_(-self.shift, self.shift)
            if self.jitter:
                m = math.log(self.jitter)
                coords = coords * torch.empty(1, 2, **f32).uniform_(-m, m).exp()
            if self.rescale:
                m = math.log(self.rescale)
                coords = coords * torch.empty(1, **f32).uniform_(-m, m).exp()
        inv_freq = 1.0 / self.theta ** (torch.arange(self.head_dim // 4, **f32) * (4.0 / self.head_dim))
        angles = (2 * math.pi * coords[:, :, None] * inv_freq).flatten(1)  # [N, d/2]
        angles = angles.repeat(1, 2)  # [N, d]
        return angles.cos(), angles.sin()


def rotate_half(x):
    a, b = x.chunk(2, dim=-1)
    return torch.cat([-b, a], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


class NepaSelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.head_dim = d // self.heads
        self.dropout = c["attention_probs_dropout_prob"]
        bias = c["qkv_bias"]
        self.query, self.key, self.value = nn.Linear(d, d, bias), nn.Linear(d, d, bias), nn.Linear(d, d, bias)
        if c["qk_norm"]:
            ln = lambda: nn.LayerNorm(self.head_dim, eps=c["layer_norm_eps"],
                                      elementwise_affine=c["qk_norm_affine"],
                                      bias=c["qk_norm_affine"] and c["qk_norm_bias"])
            self.q_norm, self.k_norm = ln(), ln()
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, cos, sin, causal):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if cos is not None:
            p = t - cos.shape[0]  # CLS (and any prefix) stays unrotated
            q = torch.cat([q[:, :, :p], apply_rope(q[:, :, p:], cos, sin)], dim=2)
            k = torch.cat([k[:, :, :p], apply_rope(k[:, :, p:], cos, sin)], dim=2)
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0,
                                             is_causal=causal)
        return out.transpose(1, 2).reshape(b, t, -1)


class NepaSelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])

    def forward(self, x):
        return self.dense(x)


class NepaAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = NepaSelfAttention(c)
        self.output = NepaSelfOutput(c)

    def forward(self, x, cos, sin, causal):
        return self.output(self.attention(x, cos, sin, causal))


ACTIVATIONS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
    "swish": F.silu,
    "relu": F.relu,
}


class NepaIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.act = ACTIVATIONS[c["hidden_act"]]
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"]) if c["use_gated_mlp"] else None

    def forward(self, x):
        if self.gate_proj is not None:
            return self.act(self.gate_proj(x)) * self.up_proj(x)
        return self.act(self.up_proj(x))


class NepaOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["intermediate_size"], c["hidden_size"])
        ls = c["layerscale_value"]
        self.layer_scale = LayerScale(c["hidden_size"], ls) if ls is not None else nn.Identity()

    def forward(self, x):
        return self.layer_scale(self.dense(x))


class DropPath(nn.Module):
    def __init__(self, p):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class NepaLayer(nn.Module):
    def __init__(self, c, drop_path):
        super().__init__()
        d, eps, ls = c["hidden_size"], c["layer_norm_eps"], c["layerscale_value"]
        self.layernorm_before = nn.LayerNorm(d, eps=eps)
        self.attention = NepaAttention(c)
        self.layer_scale = LayerScale(d, ls) if ls is not None else nn.Identity()
        self.layernorm_after = nn.LayerNorm(d, eps=eps)
        self.intermediate = NepaIntermediate(c)
        self.output = NepaOutput(c)
        self.drop_path = DropPath(drop_path)

    def forward(self, h, cos, sin, causal):
        h = h + self.drop_path(self.layer_scale(self.attention(self.layernorm_before(h), cos, sin, causal)))
        return h + self.drop_path(self.output(self.intermediate(self.layernorm_after(h))))


class NepaPatchEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        p = c["patch_size"]
        self.projection = nn.Conv2d(c["num_channels"], c["hidden_size"], kernel_size=p, stride=p)

    def forward(self, pixel_values):
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class NepaEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        if config_get(c, "use_mask_token", False):
            self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.patch_embeddings = NepaPatchEmbeddings(c)
        if config_get(c, "use_abs_pos_embed", False):
            n = (c["image_size"] // c["patch_size"]) ** 2
            self.position_embeddings = nn.Parameter(torch.zeros(1, n + 1, d))
        else:
            self.position_embeddings = None
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, pixel_values):
        patches = self.patch_embeddings(pixel_values)
        x = torch.cat([self.cls_token.expand(patches.shape[0], -1, -1), patches], dim=1)
        input_embedding = x
        if self.position_embeddings is not None:
            x = x + self.position_embeddings
        return self.dropout(x), input_embedding


class ViTNepaModel(nn.Module):
    """forward(pixels) -> (last_hidden_state, input_embedding), both [B, T, D]."""

    def __init__(self, c):
        super().__init__()
        self.config = c
        self.embeddings = NepaEmbeddings(c)
        self.rope = RopePositionEmbedding(c) if config_get(c, "use_rope", True) else None
        n, dp = c["num_hidden_layers"], c["drop_path_prob"]
        self.encoder = nn.Module()
        self.encoder.layer = nn.ModuleList([NepaLayer(c, dp * i / max(n - 1, 1)) for i in range(n)])
        self.layernorm = nn.LayerNorm(c["hidden_size"], eps=c["layer_norm_eps"])

    def forward(self, pixel_values):
        p = self.config["patch_size"]
        gh, gw = pixel_values.shape[2] // p, pixel_values.shape[3] // p
        h, input_embedding = self.embeddings(pixel_values)
        cos, sin = self.rope(gh, gw, pixel_values.device) if self.rope is not None else (None, None)
        causal = self.config["is_causal"]
        for layer in self.encoder.layer:
            h = layer(h, cos, sin, causal)
        return self.layernorm(h), input_embedding


def nepa_loss(h, z):
    """NEPA-SPEC §2: position t predicts token t+1; negative cosine against the detached input embedding."""
    pred = F.normalize(h[:, :-1].float(), dim=-1)
    target = F.normalize(z[:, 1:].detach().float(), dim=-1)
    return -(pred * target).sum(-1).mean()


def adamw(model, lr=1e-4, weight_decay=0.05, betas=(0.9, 0.95), eps=1e-8):
    """NEPA-SPEC §3 groups: decay on every parameter with >= 2 dims, none on the rest. PyTorch's default
    implementation choice (foreach on CPU) is kept, as the release would run it."""
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [{"params": [p for p in params if p.dim() >= 2], "weight_decay": weight_decay},
              {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, betas=betas, eps=eps)


def load_model(model_dir):
    """A folder written by save_hf_model (config.json + model.safetensors) -> (config, model, state dict)."""
    from safetensors.torch import load_file

    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    tensors = load_file(os.path.join(model_dir, "model.safetensors"))
    state = {k[len(PREFIX):]: v for k, v in tensors.items() if k.startswith(PREFIX)}
    model = ViTNepaModel(config)
    model.load_state_dict(state, strict=True)
    return config, model, state


def check_against_reference(model_dir, batch=2, tol=1e-4):
    """Eval-mode forward (no RoPE augmentation) of this module vs the float64 reference, on the folder's
    weights and on the same weights with every LayerScale set to 1. The release init (LayerScale 1e-5) makes the
    blocks nearly invisible in the output, so the second pass is the one that actually exercises attention,
    QK-Norm, RoPE and the MLP. Returns the max abs differences; raises when one exceeds `tol`."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
    import nepa_reference

    config, model, state = load_model(model_dir)
    size, ch = config["image_size"], config["num_channels"]
    x = torch.rand(batch, ch, size, size, generator=torch.Generator().manual_seed(0)) * 2 - 1
    results = {}
    for name, ls in (("release init", None), ("LayerScale=1", 1.0)):
        weights = {k: (torch.ones_like(v) if ls is not None and k.endswith("lambda1") else v) for k, v in state.items()}
        model.load_state_dict(weights, strict=True)
        reference = nepa_reference.ViTNepaReference(config).double()
        reference.load_state_dict({k: v.double() for k, v in weights.items()}, strict=True)
        model.eval()
        reference.eval()
        with torch.no_grad():
            h, z = model(x)
            h_ref, z_ref = reference(x.double())
            loss, loss_ref = nepa_loss(h, z), nepa_reference.nepa_loss(h_ref, z_ref)
        diff = max((h.double() - h_ref).abs().max().item(), (z.double() - z_ref).abs().max().item(),
                   abs(loss.item() - loss_ref.item()))
        results[name] = diff
        if not diff <= tol:
            raise RuntimeError(f"eager model disagrees with the float64 reference ({name}): max |diff| {diff:.3g}")
    model.load_state_dict(state, strict=True)
    return results


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model_dir", help="folder with config.json + model.safetensors")
    ap.add_argument("--check", action="store_true", help="compare with the float64 reference")
    ap.add_argument("--tol", type=float, default=1e-4)
    args = ap.parse_args()
    if not args.check:
        ap.error("nothing to do without --check")
    print(json.dumps({"max_abs_diff": check_against_reference(args.model_dir, tol=args.tol)}))


if __name__ == "__main__":
    main()
