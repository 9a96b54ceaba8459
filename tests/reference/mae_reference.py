"""Reference MAE (encoder on the visible patches, decoder with mask tokens, MSE on the hidden patches' pixels) in
plain PyTorch, float64.

Written from the facts of the release (facebookresearch/mae, models_mae.py), not from its code: the encoder keeps
the patches ids_keep (the first len_keep of a per-image shuffle) with their sin-cos positions and puts the CLS
token in front; the decoder embeds every encoder token, appends mask tokens, restores raster order with the
inverse of the shuffle (the release's gather by ids_restore), puts CLS back in front, adds its own sin-cos table
(CLS row zero), runs timm blocks (here nepa_reference.Layer: same arithmetic, HF names), LayerNorm, the pixel
projection, and drops CLS; the loss is the per-patch mean squared error on (normalised) pixels averaged over the
hidden patches. The trunk's parameters are those of nepa_reference.ViTNepaReference (HF names); it may also run
the NEPA switches (RoPE with each kept patch's own row, QK-Norm, LayerScale, no CLS, a learned position table).
Used only by tests and fixtures.
"""
import math

import torch
from torch import nn

from aim_reference import pixel_targets, sincos_2d
from nepa_reference import LayerNorm, Layer, ViTNepaReference, rope_tables, rotate_half


def decoder_block_config(dec):
    return dict(hidden_size=dec["width"], num_attention_heads=dec["heads"], intermediate_size=dec["ratio"] * dec["width"],
                hidden_act="gelu", use_gated_mlp=False, qkv_bias=True, qk_norm=False, layer_norm_eps=dec["eps"],
                layerscale_value=None)


def attend(sa, x, cos, sin):
    b, t, _ = x.shape
    split = lambda y: y.view(b, t, sa.heads, sa.head_dim).transpose(1, 2)
    q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
    if sa.q_norm is not None:
        q, k = sa.q_norm(q), sa.k_norm(k)
    if cos is not None:  # [B, 1, K, d]: each kept patch's own row; CLS (if any) not rotated
        p = t - cos.shape[-2]
        q = torch.cat([q[:, :, :p], q[:, :, p:] * cos + rotate_half(q[:, :, p:]) * sin], 2)
        k = torch.cat([k[:, :, :p], k[:, :, p:] * cos + rotate_half(k[:, :, p:]) * sin], 2)
    scores = q @ k.transpose(-1, -2) / math.sqrt(sa.head_dim)
    return (torch.softmax(scores, -1) @ v).transpose(1, 2).reshape(b, t, -1)


def block(layer, x, cos, sin):
    """One pre-norm block (nepa_reference.Layer's parameters), bidirectional, RoPE rows optional."""
    a = layer.attention.output.dense(attend(layer.attention.attention, layer.layernorm_before(x), cos, sin))
    if layer.layer_scale is not None:
        a = a * layer.layer_scale.lambda1
    x = x + a
    m = layer.output.dense(layer.intermediate(layer.layernorm_after(x)))
    if layer.output.layer_scale is not None:
        m = m * layer.output.layer_scale.lambda1
    return x + m


def subset_encoder(tr, c, pixels, ids_keep):
    """The trunk `tr` (ViTNepaReference parameters) on the patches ids_keep [B, K] of each image, each with its own
    position (sin-cos, learned table or RoPE row), CLS in front when the trunk has one; after the final LayerNorm."""
    p = c["patch_size"]
    gh, gw = pixels.shape[2] // p, pixels.shape[3] // p
    b, k = ids_keep.shape
    d = c["hidden_size"]
    x = tr.embeddings.patch_embeddings.projection(pixels).flatten(2).transpose(1, 2)  # [B, N, D]
    cls_n = 1 if c["use_cls_token"] else 0
    if c["use_sincos_pos_embed"]:
        x = x + sincos_2d(gh, gw, d, x.dtype)
    if c["use_abs_pos_embed"]:
        x = x + tr.embeddings.position_embeddings[:, cls_n:]
    x = torch.stack([x[i, ids_keep[i]] for i in range(b)])  # the kept patches, in ids_keep's order
    if cls_n:
        cls = tr.embeddings.cls_token
        if c["use_abs_pos_embed"]:
            cls = cls + tr.embeddings.position_embeddings[:, :1]
        x = torch.cat([cls.expand(b, -1, -1), x], 1)
    cos = sin = None
    if c["use_rope"]:
        cos, sin = rope_tables(gh, gw, d // c["num_attention_heads"], c["rope_theta"], x.dtype)
        cos = torch.stack([cos[ids_keep[i]] for i in range(b)])[:, None]
        sin = torch.stack([sin[ids_keep[i]] for i in range(b)])[:, None]
    for layer in tr.encoder.layer:
        x = block(layer, x, cos, sin)
    return tr.layernorm(x)


class Decoder(nn.Module):
    def __init__(self, c, dec):
        super().__init__()
        w = dec["width"]
        p = c["patch_size"]
        self.decoder_embed = nn.Linear(c["hidden_size"], w)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))
        self.decoder_blocks = nn.ModuleList([Layer(decoder_block_config(dec)) for _ in range(dec["depth"])])
        self.decoder_norm = LayerNorm(w, dec["eps"])
        self.decoder_pred = nn.Linear(w, p * p * c["num_channels"])


class MaeReference(nn.Module):
    """`trunk` holds the backbone's parameters (state_dict keys = HF names), `mae_decoder` the decoder."""

    def __init__(self, c, dec):
        super().__init__()
        self.c, self.d = c, dec
        self.trunk = ViTNepaReference(c)
        if not c["use_cls_token"]:
            del self.trunk.embeddings.cls_token
        if c["use_abs_pos_embed"]:
            n = (c["image_size"] // c["patch_size"]) ** 2
            self.trunk.embeddings.position_embeddings = nn.Parameter(
                torch.zeros(1, n + (1 if c["use_cls_token"] else 0), c["hidden_size"]))
        self.mae_decoder = Decoder(c, dec)

    def encoder(self, pixels, ids_keep):
        return subset_encoder(self.trunk, self.c, pixels, ids_keep)

    def decoder(self, latent, ids_keep, gh, gw):
        c, dec = self.c, self.mae_decoder
        n = gh * gw
        b, k = ids_keep.shape
        cls_n = 1 if c["use_cls_token"] else 0
        x = dec.decoder_embed(latent)
        # The release's shuffle: the kept patches first, then the hidden ones (their order does not matter).
        ids_shuffle = torch.stack([torch.cat([ids_keep[i], torch.tensor(
            [j for j in range(n) if j not in set(ids_keep[i].tolist())], dtype=torch.int64)]) for i in range(b)])
        ids_restore = torch.argsort(ids_shuffle, 1)
        seq = torch.cat([x[:, cls_n:], dec.mask_token.expand(b, n - k, -1)], 1)
        seq = torch.gather(seq, 1, ids_restore[:, :, None].expand(-1, -1, x.shape[2]))
        seq = seq + sincos_2d(gh, gw, x.shape[2], x.dtype)
        h = torch.cat([x[:, :1], seq], 1) if cls_n else seq
        for blk in dec.decoder_blocks:
            h = block(blk, h, None, None)
        return dec.decoder_pred(dec.decoder_norm(h))[:, cls_n:]

    def forward(self, pixels, ids_keep):
        """(latent [B, (1+)K, D], pred [B, N, P], loss)."""
        c, d = self.c, self.d
        p = c["patch_size"]
        gh, gw = pixels.shape[2] // p, pixels.shape[3] // p
        n = gh * gw
        latent = self.encoder(pixels, ids_keep)
        pred = self.decoder(latent, ids_keep, gh, gw)
        b = pixels.shape[0]
        target = pixel_targets(pixels, p, d["norm_pix_loss"], d["norm_pix_eps"])
        per_patch = ((pred - target) ** 2).mean(-1)
        hidden = torch.ones(b, n, dtype=pred.dtype)
        for i in range(b):
            hidden[i, ids_keep[i]] = 0.0
        loss = (per_patch * hidden).sum() / hidden.sum()
        return latent, pred, loss
