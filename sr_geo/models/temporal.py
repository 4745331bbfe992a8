"""What temporal models share: the masked median composite, its bicubic baseline, and the single-image
view through which `sr_geo.models.receptive` measures their receptive radius.

A temporal model maps frames x (N, T, C, H, W) and their validity (N, T, H, W) to (N, C, H·s, W·s).
Invalid pixels hold 0, as the pipeline's normalisation leaves them, and must not influence the output
through their values; only through the validity itself.
"""

from __future__ import annotations

import torch

from sr_geo.models.base import SRModel
from sr_geo.models.bicubic import bicubic_upsample


def masked_median(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-pixel median over the valid frames, (N, T, C, H, W) → (N, C, H, W); 0 where no frame is valid.

    The median, not the mean, so a cloud edge the mask missed or one odd date does not drag the
    composite. For an even count it is the lower of the two middle values (torch.nanmedian).
    """
    values = torch.where(valid.unsqueeze(2), x, torch.full_like(x, float("nan")))
    return torch.nan_to_num(torch.nanmedian(values, dim=1).values, nan=0.0)


class MedianBicubic(SRModel):
    """Bicubic of the masked median composite: the classical multi-frame baseline."""

    arch = "median-bicubic"
    temporal = True

    def forward(self, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return bicubic_upsample(masked_median(x, valid), self.scale)


class SingleImageView(SRModel):
    """A temporal model seen as a single-image one: the image repeated as `frames` valid frames.

    `sr_geo.models.receptive` probes models with (N, C, H, W) images; through this view it measures
    temporal models unchanged. The theoretical radius it finds holds for any number of frames when
    the model's recurrence is pointwise in space (as `sr_geo.models.rnn.RNN`'s is), because every frame
    then reaches the output through the same spatial paths.
    """

    def __init__(self, model: SRModel, frames: int = 3) -> None:
        super().__init__(model.scale)
        self.model, self.frames = model, frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stack = x.unsqueeze(1).expand(-1, self.frames, -1, -1, -1)
        valid = torch.ones((x.shape[0], self.frames, *x.shape[-2:]), dtype=torch.bool, device=x.device)
        return self.model(stack, valid)
