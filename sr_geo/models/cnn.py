"""A band-agnostic EDSR-style residual CNN with pixel-shuffle upsampling.

Residual blocks without batch norm (EDSR, Lim et al. 2017) with residual scaling, sub-pixel
convolution upsampling in ×2 steps, and a global bicubic skip so the network learns only the
detail bicubic misses: an untrained network is exactly bicubic, and training is stable from step one.
The trunk runs on each band separately and every block exchanges information between bands through
the band mean (`sr_geo.models.bands`), so one set of weights serves any band count.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from sr_geo.models.bands import BandExchange, fold_bands, unfold_bands
from sr_geo.models.base import SRModel
from sr_geo.models.bicubic import bicubic_upsample


def conv3x3(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, padding=1)


class ResidualBlock(nn.Module):
    """conv → (+ band exchange) → ReLU → conv, scaled and added back."""

    def __init__(self, feats: int, res_scale: float) -> None:
        super().__init__()
        self.conv1 = conv3x3(feats, feats)
        self.exchange = BandExchange(feats)
        self.conv2 = conv3x3(feats, feats)
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor, bands: int) -> torch.Tensor:
        h = torch.relu(self.exchange(self.conv1(x), bands))
        return x + self.conv2(h) * self.res_scale


def pixel_shuffle_upsampler(feats: int, scale: int) -> nn.Sequential:
    if scale & (scale - 1) or scale < 2:
        raise ValueError(f"pixel-shuffle upsampler supports powers of two, got ×{scale}")
    layers: list[nn.Module] = []
    for _ in range(int(math.log2(scale))):
        layers += [conv3x3(feats, 4 * feats), nn.PixelShuffle(2)]
    return nn.Sequential(*layers)


class TrunkModel(SRModel):
    """The skeleton both single-image networks share: a per-band head, a trunk of band-exchanging
    blocks with a long skip, an upsampler (the subclass's), a zero-initialised tail and the bicubic
    skip that makes an untrained network exactly bicubic."""

    # Bytes per output pixel of one band image and per feature channel (`SRModel.working_bytes`); the
    # upsampler's feature maps at output resolution dominate. Measured with `feats` 32 on 256² tiles.
    bytes_per_feature: float

    def working_bytes(self, frames: int = 1) -> float:
        return self.bytes_per_feature * self.feats

    def build_trunk(self, feats: int, blocks: list[nn.Module]) -> None:
        self.head = conv3x3(1, feats)
        self.body = nn.ModuleList(blocks)
        self.body_tail = conv3x3(feats, feats)
        self.tail = conv3x3(feats, 1)
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def upsample_features(self, features: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bands = x.shape[1]
        features = self.head(fold_bands(x))
        trunk = features
        for block in self.body:
            trunk = block(trunk, bands)
        features = features + self.body_tail(trunk)
        detail = unfold_bands(self.tail(self.upsample_features(features)), bands)
        return bicubic_upsample(x, self.scale) + detail


class CNN(TrunkModel):
    arch = "cnn"
    bytes_per_feature = 10.0  # 300 B per output pixel of a band image measured, 262 with 4 bands folded

    def __init__(self, scale: int, feats: int = 32, blocks: int = 8, res_scale: float = 0.1) -> None:
        super().__init__(scale)
        self.feats, self.blocks, self.res_scale = feats, blocks, res_scale
        self.build_trunk(feats, [ResidualBlock(feats, res_scale) for _ in range(blocks)])
        self.upsample = pixel_shuffle_upsampler(feats, scale)

    def config(self) -> dict:
        return {**super().config(), "feats": self.feats, "blocks": self.blocks, "res_scale": self.res_scale}

    def upsample_features(self, features: torch.Tensor) -> torch.Tensor:
        return self.upsample(features)
