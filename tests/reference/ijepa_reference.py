"""Reference I-JEPA (context encoder on the context block, EMA target encoder on every patch, predictor, smooth L1)
in plain PyTorch, float64.

Written from the facts of the release (facebookresearch/ijepa), not from its code: the encoders are ViTs without
CLS with fixed sin-cos positions, run on the kept patches only (src/masks/utils.py apply_masks; here
mae_reference.subset_encoder); the target is F.layer_norm of the target encoder's output (no affine) at each target
block, concatenated mask after mask; the predictor (src/models/vision_transformer.py VisionTransformerPredictor)
embeds the context, adds the sin-cos positions of its patches, repeats it once per target block, appends mask
tokens plus the target positions, runs timm blocks (here nepa_reference.Layer's parameters), LayerNorm, and projects
the target tokens back to the encoder width; loss = F.smooth_l1_loss(pred, target) (beta 1, mean).
Used only by tests and fixtures.
"""
import torch
from torch import nn
from torch.nn import functional as F

from aim_reference import sincos_2d
from mae_reference import block, subset_encoder
from nepa_reference import LayerNorm, Layer, ViTNepaReference


def predictor_block_config(pred):
    return dict(hidden_size=pred["width"], num_attention_heads=pred["heads"], intermediate_size=4 * pred["width"],
                hidden_act="gelu", use_gated_mlp=False, qkv_bias=True, qk_norm=False, layer_norm_eps=1e-6,
                layerscale_value=None)


class Predictor(nn.Module):
    def __init__(self, c, pred):
        super().__init__()
        w = pred["width"]
        self.predictor_embed = nn.Linear(c["hidden_size"], w)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, w))
        self.predictor_blocks = nn.ModuleList([Layer(predictor_block_config(pred)) for _ in range(pred["depth"])])
        self.predictor_norm = LayerNorm(w, 1e-6)
        self.predictor_proj = nn.Linear(w, c["hidden_size"])

    def forward(self, ctx, ctx_ids, target_ids, gh, gw):
        b, kc = ctx_ids.shape
        w = self.mask_token.shape[-1]
        pos = sincos_2d(gh, gw, w, ctx.dtype)
        x = self.predictor_embed(ctx) + torch.stack([pos[ctx_ids[i]] for i in range(b)])
        pos_t = torch.cat([torch.stack([pos[t[i]] for i in range(b)]) for t in target_ids], 0)
        h = torch.cat([x.repeat(len(target_ids), 1, 1), self.mask_token + pos_t], 1)
        for blk in self.predictor_blocks:
            h = block(blk, h, None, None)
        return self.predictor_proj(self.predictor_norm(h)[:, kc:])


class IjepaReference(nn.Module):
    """`trunk` (the context encoder, HF names), `target_encoder` (same names), `ijepa_predictor`."""

    def __init__(self, c, pred):
        super().__init__()
        self.c = c
        self.trunk = ViTNepaReference(c)
        self.target_encoder = ViTNepaReference(c)
        for m in (self.trunk, self.target_encoder):
            del m.embeddings.cls_token  # no CLS token
        self.ijepa_predictor = Predictor(c, pred)

    def forward(self, pixels, ctx_ids, target_ids):
        """(pred [T*B, Kt, D], target [T*B, Kt, D], loss)."""
        c = self.c
        p = c["patch_size"]
        gh, gw = pixels.shape[2] // p, pixels.shape[3] // p
        b = pixels.shape[0]
        with torch.no_grad():
            every = torch.arange(gh * gw).expand(b, -1)
            h = subset_encoder(self.target_encoder, c, pixels, every)
            h = F.layer_norm(h, (h.shape[-1],))
            target = torch.cat([torch.stack([h[i, t[i]] for i in range(b)]) for t in target_ids], 0)
        z = subset_encoder(self.trunk, c, pixels, ctx_ids)
        pred = self.ijepa_predictor(z, ctx_ids, target_ids, gh, gw)
        return pred, target, F.smooth_l1_loss(pred, target)
