"""The NEPA backbone as the official PyTorch code runs it (eager mode: nn.Linear, F.layer_norm,
F.scaled_dot_product_attention, F.gelu), for speed comparisons only.

It reuses the module tree (and so the Hugging Face parameter names) of tests/reference/nepa_reference.py and
replaces the deliberately naive math with the fused PyTorch ops; `--check` in pretrain_step.py verifies that the
two agree on the same weights. Training-mode RoPE rescaling (pos_embed_rescale) is applied as the C++ model
does, so both sides do the same work.
"""
import math
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "reference"))
import nepa_reference as ref  # noqa: E402


def _layer_norm(self, x):
    return F.layer_norm(x, (self.dim,), self.weight, self.bias, self.eps)


def _attention(self, x, cos, sin, causal):
    b, t, _ = x.shape
    qkv = [lin(x).view(b, t, self.heads, self.head_dim).transpose(1, 2) for lin in (self.query, self.key, self.value)]
    q, k, v = qkv
    if self.q_norm is not None:
        q, k = self.q_norm(q), self.k_norm(k)
    p = t - cos.shape[0]
    q = torch.cat([q[:, :, :p], q[:, :, p:] * cos + ref.rotate_half(q[:, :, p:]) * sin], 2)
    k = torch.cat([k[:, :, :p], k[:, :, p:] * cos + ref.rotate_half(k[:, :, p:]) * sin], 2)
    out = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    return out.transpose(1, 2).reshape(b, t, -1)


def _act(x, name):
    if name == "gelu":
        return F.gelu(x)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return F.gelu(x, approximate="tanh")
    if name in ("silu", "swish"):
        return F.silu(x)
    return F.relu(x)


ref.LayerNorm.forward = _layer_norm
ref.SelfAttention.forward = _attention
ref.act = _act


class EagerNepa(ref.ViTNepaReference):
    """Same parameters as the reference; forward adds training-time RoPE rescaling and returns (h, z)."""

    def forward(self, pixel_values, causal=None):
        c = self.c
        causal = c["is_causal"] if causal is None else causal
        p = c["patch_size"]
        gh, gw = pixel_values.shape[2] // p, pixel_values.shape[3] // p
        patches = self.embeddings.patch_embeddings.projection(pixel_values).flatten(2).transpose(1, 2)
        z = torch.cat([self.embeddings.cls_token.expand(patches.shape[0], -1, -1), patches], 1)
        head_dim = c["hidden_size"] // c["num_attention_heads"]
        rescale = c.get("pos_embed_rescale")
        if self.training and rescale:
            # The same augmentation as the C++ model: coordinates scaled by exp(U(-ln r, ln r)).
            s = math.exp(torch.empty(1).uniform_(-math.log(rescale), math.log(rescale)).item())
            cos, sin = _scaled_tables(gh, gw, head_dim, c["rope_theta"], s, pixel_values.dtype)
        else:
            cos, sin = ref.rope_tables(gh, gw, head_dim, c["rope_theta"], pixel_values.dtype)
        h = z
        for layer in self.encoder.layer:
            h = layer(h, cos, sin, causal)
        return self.layernorm(h), z


def _scaled_tables(h, w, head_dim, theta, scale, dtype):
    ys = (torch.arange(h, dtype=dtype) + 0.5) / h * 2 - 1
    xs = (torch.arange(w, dtype=dtype) + 0.5) / w * 2 - 1
    coords = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).reshape(-1, 2) * scale
    inv_freq = 1.0 / theta ** (torch.arange(head_dim // 4, dtype=dtype) * 4.0 / head_dim)
    angles = (2 * math.pi * coords[:, :, None] * inv_freq).reshape(h * w, -1)
    angles = torch.cat([angles, angles], -1)
    return angles.cos(), angles.sin()


def nepa_loss(h, z):
    pred = F.normalize(h[:, :-1].float(), dim=-1)
    target = F.normalize(z[:, 1:].detach().float(), dim=-1)
    return -(pred * target).sum(-1).mean()
