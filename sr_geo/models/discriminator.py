"""The GAN discriminator: a band-agnostic, spectrally normalised patch discriminator.

It judges every band of an HR image on its own (bands folded into the batch, as in the generator)
and exchanges information between bands through the band mean, so it trains on batches of any band
count. Spectral normalisation (Miyato et al. 2018) bounds its Lipschitz constant, which keeps the
adversarial game stable without gradient penalties. It returns a map of patch logits (each sees
about 46 HR pixels) and the features of every stage, which the generator's feature-matching loss
compares between real and generated images. Training only: inference never builds it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from sr_geo.models.bands import BandExchange, fold_bands

NEGATIVE_SLOPE = 0.2


class PatchDiscriminator(nn.Module):
    def __init__(self, feats: int = 32, stages: int = 3) -> None:
        super().__init__()
        self.feats, self.stages = feats, stages
        widths = [feats * 2**min(i, 2) for i in range(stages + 1)]
        self.head = spectral_norm(nn.Conv2d(1, widths[0], 3, padding=1))
        self.down = nn.ModuleList(
            [spectral_norm(nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)) for i in range(stages)]
        )
        self.exchange = nn.ModuleList([BandExchange(width) for width in widths[1:]])
        for exchange in self.exchange:
            spectral_norm(exchange.proj)
        self.out = spectral_norm(nn.Conv2d(widths[-1], 1, 3, padding=1))

    def config(self) -> dict:
        return {"feats": self.feats, "stages": self.stages}

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Logits (N·C, 1, h, w) and the per-stage features, for an HR batch (N, C, H, W)."""
        bands = x.shape[1]
        h = F.leaky_relu(self.head(fold_bands(x)), NEGATIVE_SLOPE)
        features = []
        for down, exchange in zip(self.down, self.exchange, strict=True):
            h = F.leaky_relu(exchange(down(h), bands), NEGATIVE_SLOPE)
            features.append(h)
        return self.out(h), features
