"""An EDSR-style residual CNN with pixel-shuffle upsampling.

Residual blocks without batch norm (EDSR, Lim et al. 2017) with residual scaling, sub-pixel
convolution upsampling in ×2 steps, and a global bicubic skip so the network learns only the
detail bicubic misses: an untrained network is exactly bicubic, and training is stable from step one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sr_geo.models.base import SRModel
from sr_geo.models.bicubic import bicubic_upsample


def _conv(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResidualBlock(nn.Module):
    def __init__(self, feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(_conv(feats, feats), nn.ReLU(inplace=True), _conv(feats, feats))
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x) * self.res_scale


def pixel_shuffle_upsampler(feats: int, scale: int) -> nn.Sequential:
    if scale & (scale - 1) or scale < 2:
        raise ValueError(f"pixel-shuffle upsampler supports powers of two, got ×{scale}")
    layers: list[nn.Module] = []
    for _ in range(int(math.log2(scale))):
        layers += [_conv(feats, 4 * feats), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


class CNN(SRModel):
    arch = "cnn"

    def __init__(self, bands: int, scale: int, feats: int = 32, blocks: int = 8, res_scale: float = 0.1) -> None:
        super().__init__(bands, scale)
        self.feats, self.blocks, self.res_scale = feats, blocks, res_scale
        self.head = _conv(bands, feats)
        self.body = nn.Sequential(*[ResidualBlock(feats, res_scale) for _ in range(blocks)], _conv(feats, feats))
        self.upsample = pixel_shuffle_upsampler(feats, scale)
        self.tail = _conv(feats, bands)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def config(self) -> dict:
        return {**super().config(), "feats": self.feats, "blocks": self.blocks, "res_scale": self.res_scale}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.head(x)
        features = features + self.body(features)
        return bicubic_upsample(x, self.scale) + self.tail(self.upsample(features))
