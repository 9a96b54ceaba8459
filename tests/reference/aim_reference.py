"""Reference AIM (trunk under the prefix-causal mask, MLP pixel head, per-patch normalised MSE) in plain PyTorch.

Written from the facts of the release and the paper, not from their code (the release, apple/ml-aim aim-v1/,
ships no pretraining code): the attention rule of aim/v1/torch/layers.py PrefixCausalAttention (query i sees key
j when j <= i or j is in the prefix), the 2-D sin-cos table of its SinCosPosEmbed (first half the column, second
half the row, [sin, cos] each), no CLS token (aim/v1/torch/models.py); the head of the paper (residual MLP blocks
without biases on each token, sin-cos positions at its input); MAE's norm_pix_loss (unbiased variance, eps).
The trunk's parameters are those of nepa_reference.ViTNepaReference (HF names) without the CLS token; the
forward is spelled out here with an explicit boolean mask, eager softmax, float64 throughout.
Used only by tests and fixtures.
"""
import math

import torch
from torch import nn

from nepa_reference import LayerNorm, ViTNepaReference, act, rope_tables, rotate_half


def sincos_2d(gh, gw, dim, dtype=torch.float64):
    """[gh*gw, dim] for row-major tokens: [sin(x w), cos(x w), sin(y w), cos(y w)], w_i = 10000^(-i/(dim/4))."""
    q = dim // 4
    omega = torch.tensor([10000.0 ** (-i / q) for i in range(q)], dtype=dtype)
    rows = []
    for r in range(gh):
        for c in range(gw):
            ax, ay = c * omega, r * omega
            rows.append(torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()]))
    return torch.stack(rows)


def pixel_targets(pixels, p, norm, eps):
    """Patches [B, N, p*p*C] (channel fastest, raster order), each normalised by its mean and unbiased variance
    when `norm` (MAE's norm_pix_loss)."""
    b, ch, hh, ww = pixels.shape
    gh, gw = hh // p, ww // p
    patches = pixels.reshape(b, ch, gh, p, gw, p).permute(0, 2, 4, 3, 5, 1).reshape(b, gh * gw, p * p * ch)
    if not norm:
        return patches
    mean = patches.mean(-1, keepdim=True)
    var = ((patches - mean) ** 2).sum(-1, keepdim=True) / (patches.shape[-1] - 1)
    return (patches - mean) / torch.sqrt(var + eps)


def prefix_mask(prefix_lengths, t):
    """[B, T, T] bool, True = may attend."""
    out = torch.zeros(len(prefix_lengths), t, t, dtype=torch.bool)
    for b, s in enumerate(prefix_lengths):
        for i in range(t):
            for j in range(t):
                out[b, i, j] = j <= i or j < s
    return out


class HeadBlock(nn.Module):
    def __init__(self, width, hidden, eps):
        super().__init__()
        self.norm = LayerNorm(width, eps)
        self.fc1 = nn.Linear(width, hidden, bias=False)
        self.fc2 = nn.Linear(hidden, width, bias=False)

    def forward(self, x):
        return x + self.fc2(act(self.fc1(self.norm(x)), "gelu"))


class PixelHead(nn.Module):
    def __init__(self, dim, width, blocks, ratio, eps, out_dim):
        super().__init__()
        self.proj = nn.Linear(dim, width, bias=False)
        self.blocks = nn.ModuleList([HeadBlock(width, ratio * width, eps) for _ in range(blocks)])
        self.norm = LayerNorm(width, eps)
        self.out = nn.Linear(width, out_dim, bias=False)

    def forward(self, x, pos):
        x = self.proj(x)
        if pos is not None:
            x = x + pos
        for blk in self.blocks:
            x = blk(x)
        return self.out(self.norm(x))


class AimReference(nn.Module):
    """`trunk` holds the backbone's parameters (state_dict keys = HF names), `aim_head` the pixel head."""

    def __init__(self, c, head):
        super().__init__()
        self.c, self.h = c, head
        self.trunk = ViTNepaReference(c)
        del self.trunk.embeddings.cls_token  # AIM's trunk has no CLS token
        p = c["patch_size"]
        self.aim_head = PixelHead(c["hidden_size"], head["width"], head["blocks"], head["ratio"], head["eps"],
                                  p * p * c["num_channels"])

    def attend(self, sa, x, cos, sin, mask):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, sa.heads, sa.head_dim).transpose(1, 2)
        q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
        if sa.q_norm is not None:
            q, k = sa.q_norm(q), sa.k_norm(k)
        if cos is not None:  # RoPE ablation: every token is a patch, all rotated
            q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        scores = q @ k.transpose(-1, -2) / math.sqrt(sa.head_dim)
        scores = scores.masked_fill(~mask[:, None], float("-inf"))
        return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, -1)

    def trunk_forward(self, pixels, prefix_lengths):
        c, tr = self.c, self.trunk
        p = c["patch_size"]
        gh, gw = pixels.shape[2] // p, pixels.shape[3] // p
        x = tr.embeddings.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)
        if c["use_sincos_pos_embed"]:
            x = x + sincos_2d(gh, gw, c["hidden_size"], x.dtype)
        cos = sin = None
        if c["use_rope"]:
            cos, sin = rope_tables(gh, gw, c["hidden_size"] // c["num_attention_heads"], c["rope_theta"], x.dtype)
        mask = prefix_mask(prefix_lengths, x.shape[1])
        for layer in tr.encoder.layer:
            a = layer.attention.output.dense(self.attend(layer.attention.attention, layer.layernorm_before(x), cos, sin, mask))
            if layer.layer_scale is not None:
                a = a * layer.layer_scale.lambda1
            x = x + a
            m = layer.output.dense(layer.intermediate(layer.layernorm_after(x)))
            if layer.output.layer_scale is not None:
                m = m * layer.output.layer_scale.lambda1
            x = x + m
        return tr.layernorm(x)

    def forward(self, pixels, prefix_lengths):
        """(last_hidden_state [B, N, D], pred [B, N-1, P], loss)."""
        c, h = self.c, self.h
        p = c["patch_size"]
        gh, gw = pixels.shape[2] // p, pixels.shape[3] // p
        n = gh * gw
        hidden = self.trunk_forward(pixels, prefix_lengths)
        pos = sincos_2d(gh, gw, h["width"], hidden.dtype)[: n - 1] if h["pos_embed"] else None
        pred = self.aim_head(hidden[:, : n - 1], pos)
        target = pixel_targets(pixels, p, h["norm_pix_loss"], h["norm_pix_eps"])[:, 1:]
        per_patch = ((pred - target) ** 2).mean(-1)  # [B, N-1]: row t is patch t + 1
        counted = torch.tensor([[1.0 if t + 1 >= s else 0.0 for t in range(n - 1)] for s in prefix_lengths],
                               dtype=pred.dtype)
        loss = (per_patch * counted).sum() / counted.sum()
        return hidden, pred, loss
