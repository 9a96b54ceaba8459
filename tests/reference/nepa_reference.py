"""Reference NEPA backbone and loss in plain PyTorch, written from NEPA-SPEC.md §1-2 and §7.

Deliberately naive: eager attention with an explicit mask, separate q/k/v, every step spelled out,
so that it can serve as the ground truth for the C++ implementation. Training mode adds what the release does
there apart from the random RoPE augmentation and drop path: hidden_dropout_prob on the embeddings, after the
attention output projection and after the MLP output (before LayerScale and the residual). Parameter names are the
Hugging Face ones, so `state_dict()` (with the `vit_nepa.` prefix) is a released checkpoint layout.
Used only by tests and fixtures; never by the toolkit's executables.
"""
import math

import torch
from torch import nn


class LayerNorm(nn.Module):
    def __init__(self, dim, eps, affine=True, bias=True):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim)) if affine else None
        self.bias = nn.Parameter(torch.zeros(dim)) if affine and bias else None

    def forward(self, x):
        mean = x.mean(-1, keepdim=True)
        var = ((x - mean) ** 2).mean(-1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps)
        if self.weight is not None:
            y = y * self.weight
        if self.bias is not None:
            y = y + self.bias
        return y


def act(x, name):
    if name == "gelu":
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))
    if name in ("silu", "swish"):
        return x * torch.sigmoid(x)
    if name == "relu":
        return torch.clamp(x, min=0)
    raise ValueError(name)


def rope_tables(h, w, head_dim, theta, dtype):
    """cos/sin [h*w, head_dim] for patch centres in [-1, 1], (y, x) order, row-major."""
    ys = torch.tensor([2.0 * (i + 0.5) / h - 1.0 for i in range(h)], dtype=dtype)
    xs = torch.tensor([2.0 * (j + 0.5) / w - 1.0 for j in range(w)], dtype=dtype)
    coords = torch.stack([ys[:, None].expand(h, w).reshape(-1), xs[None, :].expand(h, w).reshape(-1)], -1)
    inv_freq = torch.tensor([1.0 / theta ** (4.0 * k / head_dim) for k in range(head_dim // 4)], dtype=dtype)
    angles = 2 * math.pi * coords[:, :, None] * inv_freq[None, None, :]  # [N, 2, d/4]
    angles = angles.reshape(h * w, -1)  # [N, d/2]: y frequencies, then x frequencies
    angles = torch.cat([angles, angles], -1)  # tiled twice -> [N, d]
    return angles.cos(), angles.sin()


def rotate_half(x):
    d = x.shape[-1] // 2
    return torch.cat([-x[..., d:], x[..., :d]], -1)


class SelfAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        d = c["hidden_size"]
        self.heads = c["num_attention_heads"]
        self.head_dim = d // self.heads
        self.query = nn.Linear(d, d, bias=c["qkv_bias"])
        self.key = nn.Linear(d, d, bias=c["qkv_bias"])
        self.value = nn.Linear(d, d, bias=c["qkv_bias"])
        if c["qk_norm"]:
            eps = c["layer_norm_eps"]
            self.q_norm = LayerNorm(self.head_dim, eps, c["qk_norm_affine"], c["qk_norm_bias"])
            self.k_norm = LayerNorm(self.head_dim, eps, c["qk_norm_affine"], c["qk_norm_bias"])
        else:
            self.q_norm = self.k_norm = None

    def forward(self, x, cos, sin, causal):
        b, t, _ = x.shape
        split = lambda y: y.view(b, t, self.heads, self.head_dim).transpose(1, 2)
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        n = cos.shape[0]
        p = t - n  # the CLS token is not rotated
        q = torch.cat([q[:, :, :p], q[:, :, p:] * cos + rotate_half(q[:, :, p:]) * sin], 2)
        k = torch.cat([k[:, :, :p], k[:, :, p:] * cos + rotate_half(k[:, :, p:]) * sin], 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)
        if causal:
            mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
            scores = scores.masked_fill(mask, float("-inf"))
        probs = torch.softmax(scores, -1)
        return (probs @ v).transpose(1, 2).reshape(b, t, -1)


class SelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["hidden_size"], c["hidden_size"])


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = SelfAttention(c)
        self.output = SelfOutput(c)


class LayerScale(nn.Module):
    def __init__(self, dim, value):
        super().__init__()
        self.lambda1 = nn.Parameter(torch.full((dim,), float(value)))


class Intermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.act = c["hidden_act"]
        self.up_proj = nn.Linear(c["hidden_size"], c["intermediate_size"])
        self.gate_proj = nn.Linear(c["hidden_size"], c["intermediate_size"]) if c["use_gated_mlp"] else None

    def forward(self, x):
        if self.gate_proj is not None:
            return act(self.gate_proj(x), self.act) * self.up_proj(x)
        return act(self.up_proj(x), self.act)


class Output(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c["intermediate_size"], c["hidden_size"])
        ls = c["layerscale_value"]
        self.layer_scale = LayerScale(c["hidden_size"], ls) if ls is not None else None


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        d, eps = c["hidden_size"], c["layer_norm_eps"]
        ls = c["layerscale_value"]
        self.layernorm_before = LayerNorm(d, eps)
        self.attention = Attention(c)
        self.layer_scale = LayerScale(d, ls) if ls is not None else None
        self.layernorm_after = LayerNorm(d, eps)
        self.intermediate = Intermediate(c)
        self.output = Output(c)

    def forward(self, h, cos, sin, causal, dropout=0.0, training=False):
        a = self.attention.output.dense(self.attention.attention(self.layernorm_before(h), cos, sin, causal))
        a = nn.functional.dropout(a, dropout, training)
        if self.layer_scale is not None:
            a = a * self.layer_scale.lambda1
        h = h + a
        m = self.output.dense(self.intermediate(self.layernorm_after(h)))
        m = nn.functional.dropout(m, dropout, training)
        if self.output.layer_scale is not None:
            m = m * self.output.layer_scale.lambda1
        return h + m


class PatchEmbeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        p = c["patch_size"]
        self.projection = nn.Conv2d(c["num_channels"], c["hidden_size"], p, stride=p)


class Embeddings(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c["hidden_size"]))
        self.patch_embeddings = PatchEmbeddings(c)


class Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList([Layer(c) for _ in range(c["num_hidden_layers"])])


class ViTNepaReference(nn.Module):
    """The backbone without RoPE augmentation and drop path; dropout only with training=True."""

    def __init__(self, c):
        super().__init__()
        self.c = c
        self.embeddings = Embeddings(c)
        self.encoder = Encoder(c)
        self.layernorm = LayerNorm(c["hidden_size"], c["layer_norm_eps"])

    def forward(self, pixel_values, causal=None, training=False):
        c = self.c
        causal = c["is_causal"] if causal is None else causal
        p = c["patch_size"]
        gh, gw = pixel_values.shape[2] // p, pixel_values.shape[3] // p
        patches = self.embeddings.patch_embeddings.projection(pixel_values).flatten(2).transpose(1, 2)
        cls = self.embeddings.cls_token.expand(patches.shape[0], -1, -1)
        input_embedding = torch.cat([cls, patches], 1)
        head_dim = c["hidden_size"] // c["num_attention_heads"]
        cos, sin = rope_tables(gh, gw, head_dim, c["rope_theta"], pixel_values.dtype)
        p_drop = c.get("hidden_dropout_prob", 0.0)
        h = nn.functional.dropout(input_embedding, p_drop, training)
        for layer in self.encoder.layer:
            h = layer(h, cos, sin, causal, p_drop, training)
        return self.layernorm(h), input_embedding


class ViTNepaClassifierReference(nn.Module):
    """ViTNepaForImageClassification (NEPA-SPEC §4): mean of the patch tokens of last_hidden_state (CLS excluded)
    -> fc_norm -> classifier, on the bidirectional backbone."""

    def __init__(self, c, num_classes):
        super().__init__()
        self.vit_nepa = ViTNepaReference(c)
        self.fc_norm = LayerNorm(c["hidden_size"], c["layer_norm_eps"])
        self.classifier = nn.Linear(c["hidden_size"], num_classes)

    def forward(self, pixel_values):
        h, _ = self.vit_nepa(pixel_values, causal=False)
        return self.classifier(self.fc_norm(h[:, 1:].mean(1)))


def nepa_loss(h, z):
    """-mean cos(h[:, t], stopgrad(z[:, t+1])), t = 0..T-2 (NEPA-SPEC §2)."""
    pred, target = h[:, :-1], z[:, 1:].detach()
    pred = pred / pred.norm(dim=-1, keepdim=True)
    target = target / target.norm(dim=-1, keepdim=True)
    return -(pred * target).sum(-1).mean()
