"""The contract every super-resolution model in sr-geo fulfils.

Models work on per-band standardised pixels ((x - scene mean) / scene std, invalid pixels set to 0),
so one set of weights serves uint8 aerial, uint16 reflectance and float data alike; the pipeline owns
normalisation, the model never sees raw digital numbers. Models are band-agnostic: they take any
number of bands, so a model is built from its scale (and size) alone.
"""

from __future__ import annotations

import torch
from torch import nn

from sr_geo.models.receptive import theoretical_radius


class SRModel(nn.Module):
    """A single-image model mapping (N, C, H, W) to (N, C, H·scale, W·scale) for any C >= 1.

    `receptive_radius` is what the tile planner uses as the default halo: the measured effective
    radius when the weights carry one, otherwise the theoretical radius computed from the network.
    """

    arch: str = ""
    temporal: bool = False

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.scale = scale
        self.effective_radius: int | None = None
        self._theoretical_radius: int | None = None

    def config(self) -> dict:
        """Constructor arguments, stored in the weights header so the model rebuilds without pickle."""
        return {"scale": self.scale}

    @property
    def theoretical_radius(self) -> int:
        if self._theoretical_radius is None:
            self._theoretical_radius = theoretical_radius(self, self.scale)
        return self._theoretical_radius

    @property
    def receptive_radius(self) -> int:
        if self.effective_radius is not None:
            return self.effective_radius
        return self.theoretical_radius

    def working_bytes(self, frames: int = 1) -> float:
        """Peak working memory of a forward pass in bytes per output pixel of one band image (of `frames`
        frames for a temporal model): what sizes a model call (`sr_geo.inference.tiles_per_call`).
        Networks measure theirs (the rise of peak memory over one CPU call, float32, rounded up); an
        interpolation holds a few images."""
        return 32.0

    def observed(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """The pixels of a temporal model's frames (N, T, C, H, W) it takes as observations, (N, T, H, W):
        `valid`, less what the model itself screens out. Back-projection onto the frames honours the same."""
        return valid

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError
