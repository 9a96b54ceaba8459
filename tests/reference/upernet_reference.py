"""UPerNet on four ViT feature grids, written from the description of mmsegmentation's BEiT/MAE ADE20K model
(NEPA issue 14: pyramid of two 2x2 transposed convs with BatchNorm and GELU / one transposed conv / identity /
2x2 max-pool; UPerHead with pyramid pooling, lateral 1x1 convs, top-down bilinear path, 3x3 FPN convs and a fused
3x3 bottleneck; an FCN auxiliary head on the third level; conv + BatchNorm + ReLU blocks; Dropout2d before each
1x1 classifier). Plain PyTorch modules with mmseg's parameter names, for float64 fixtures of the C++ model.
"""
import torch
from torch import nn
from torch.nn import functional as F


class ConvModule(nn.Module):
    def __init__(self, cin, cout, k):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)

    def forward(self, x):
        return F.relu(self.bn(self.conv(x)))


class Pyramid(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.fpn1 = nn.Sequential(nn.ConvTranspose2d(d, d, 2, 2), nn.BatchNorm2d(d), nn.GELU(), nn.ConvTranspose2d(d, d, 2, 2))
        self.fpn2 = nn.Sequential(nn.ConvTranspose2d(d, d, 2, 2))
        self.fpn4 = nn.MaxPool2d(2, 2)

    def forward(self, grids):
        return [self.fpn1(grids[0]), self.fpn2(grids[1]), grids[2], self.fpn4(grids[3])]


def resize(x, like):
    return F.interpolate(x, size=like.shape[2:], mode="bilinear", align_corners=False)


class UPerHead(nn.Module):
    def __init__(self, cin, ch, classes, scales, dropout):
        super().__init__()
        self.psp_modules = nn.ModuleList([nn.Sequential(nn.AdaptiveAvgPool2d(s), ConvModule(cin, ch, 1)) for s in scales])
        self.bottleneck = ConvModule(cin + len(scales) * ch, ch, 3)
        self.lateral_convs = nn.ModuleList([ConvModule(cin, ch, 1) for _ in range(3)])
        self.fpn_convs = nn.ModuleList([ConvModule(ch, ch, 3) for _ in range(3)])
        self.fpn_bottleneck = ConvModule(4 * ch, ch, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(ch, classes, 1)

    def forward(self, levels):
        top = levels[-1]
        psp = self.bottleneck(torch.cat([top] + [resize(m(top), top) for m in self.psp_modules], 1))
        laterals = [conv(levels[i]) for i, conv in enumerate(self.lateral_convs)] + [psp]
        for i in range(3, 0, -1):
            laterals[i - 1] = laterals[i - 1] + resize(laterals[i], laterals[i - 1])
        outs = [self.fpn_convs[i](laterals[i]) for i in range(3)] + [laterals[3]]
        outs = [outs[0]] + [resize(o, outs[0]) for o in outs[1:]]
        return self.conv_seg(self.dropout(self.fpn_bottleneck(torch.cat(outs, 1))))


class FCNHead(nn.Module):
    def __init__(self, cin, ch, classes, dropout):
        super().__init__()
        self.convs = nn.ModuleList([ConvModule(cin, ch, 3)])
        self.dropout = nn.Dropout2d(dropout)
        self.conv_seg = nn.Conv2d(ch, classes, 1)

    def forward(self, x):
        return self.conv_seg(self.dropout(self.convs[0](x)))


class UPerNetReference(nn.Module):
    def __init__(self, dim, channels, aux_channels, classes, scales=(1, 2, 3, 6), dropout=0.0):
        super().__init__()
        self.backbone = Pyramid(dim)
        self.decode_head = UPerHead(dim, channels, classes, scales, dropout)
        self.auxiliary_head = FCNHead(dim, aux_channels, classes, dropout)

    def forward(self, grids):
        levels = self.backbone(grids)
        return self.decode_head(levels), self.auxiliary_head(levels[2])
