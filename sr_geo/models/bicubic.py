"""Bicubic interpolation: the classical baseline, and the skip connection of the learned models."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from sr_geo.models.base import SRModel


def bicubic_upsample(x: torch.Tensor, scale: int) -> torch.Tensor:
    # align_corners=False is the pixel-edge convention of sr_geo.grid: no half-pixel shift.
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


class Bicubic(SRModel):
    arch = "bicubic"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return bicubic_upsample(x, self.scale)
