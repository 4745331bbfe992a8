"""Band-agnostic building blocks: one shared per-band trunk plus permutation-invariant band exchange.

Every band is processed by the same convolutions (bands are folded into the batch), so the weights do
not depend on how many bands a scene has or in which order they come. Bands still inform each other
through `BandExchange`, the DeepSets construction (Zaheer et al. 2017): each band's features receive
a 1×1 convolution of the mean of all bands' features. The mean is symmetric in the bands and defined
for any count, so a model built from these blocks runs on 1..N bands and commutes with band
permutations; with a single band the exchange sees that band alone.
"""

from __future__ import annotations

import torch
from torch import nn


def fold_bands(x: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) to (N·C, 1, H, W): every band becomes its own single-channel image."""
    n, c, h, w = x.shape
    return x.reshape(n * c, 1, h, w)


def unfold_bands(y: torch.Tensor, bands: int) -> torch.Tensor:
    """(N·C, 1, H, W) back to (N, C, H, W)."""
    return y.reshape(-1, bands, *y.shape[-2:])


class BandExchange(nn.Module):
    """Adds a 1×1 convolution of the band-mean features to every band's features."""

    def __init__(self, feats: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(feats, feats, 1)

    def forward(self, features: torch.Tensor, bands: int) -> torch.Tensor:
        """`features` (N·C, F, H, W) with the C bands of each image adjacent, as `fold_bands` lays them out."""
        grouped = features.reshape(-1, bands, *features.shape[1:])
        shared = self.proj(grouped.mean(dim=1))
        return (grouped + shared.unsqueeze(1)).reshape(features.shape)
