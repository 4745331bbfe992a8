"""Lanczos-3 interpolation: the sharper classical baseline, as a separable transposed filter."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from sr_geo.models.base import SRModel

LOBES = 3


def lanczos_weights(scale: int) -> torch.Tensor:
    """(scale, 2·LOBES + 1) taps: output phase p samples input offsets -LOBES..LOBES around its pixel.

    Output pixel centres sit at input coordinate (i + 0.5) / scale - 0.5 (the pixel-edge convention
    of sr_geo.grid), so each of the `scale` phases has its own taps, normalised to sum to one.
    """
    taps = []
    for phase in range(scale):
        centre = (phase + 0.5) / scale - 0.5
        offsets = np.arange(-LOBES, LOBES + 1) - centre
        w = np.where(np.abs(offsets) < LOBES, np.sinc(offsets) * np.sinc(offsets / LOBES), 0.0)
        taps.append(w / w.sum())
    return torch.tensor(np.array(taps), dtype=torch.float32)


class Lanczos(SRModel):
    arch = "lanczos"

    def __init__(self, scale: int) -> None:
        super().__init__(scale)
        self.register_buffer("taps", lanczos_weights(scale), persistent=False)

    def _along_last(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        padded = F.pad(x.reshape(n * c, 1, h, w), (LOBES, LOBES, 0, 0), mode="replicate")
        kernel = self.taps.to(x.dtype)[:, None, None, :]  # (scale, 1, 1, 2·LOBES + 1)
        y = F.conv2d(padded, kernel)  # (n·c, scale, h, w): one channel per output phase
        return y.permute(0, 2, 3, 1).reshape(n, c, h, w * self.scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._along_last(x)
        return self._along_last(y.transpose(2, 3)).transpose(2, 3)
