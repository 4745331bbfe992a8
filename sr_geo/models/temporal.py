"""What temporal models share: the masked median and mean composites, the median's bicubic baseline,
the screening of unmasked clouds against the median, and the single-image view through which
`sr_geo.models.receptive` measures their receptive radius.

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


def masked_mean(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean over the valid frames, (N, T, C, H, W) → (N, C, H, W); 0 where no frame is valid.

    Averages the frames' independent noise (and gain and offset) away better than the median, so it is the
    composite to upsample once outliers are screened out (`screen_outliers`).
    """
    weights = valid.unsqueeze(2).to(x.dtype)
    return (x * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


# A frame's pixel is screened out as an unmasked cloud or shadow when its brightness (mean over bands)
# lies farther from the median brightness of the pixel's frames than both OUTLIER_MADS robust standard
# deviations of those frames (1.4826 MAD: the Hampel identifier) and OUTLIER_THRESHOLD scene standard
# deviations. The floor keeps frames that agree to within noise from being screened for tiny differences;
# clear dates of a real series stay inside it (Sentinel-2 Slovenia: |deviation| < 0.6 for 99 % of clear
# pixels), clouds lie beyond (the median pixel of its cloudy date: 2.0).
OUTLIER_THRESHOLD = 1.0
OUTLIER_MADS = 3.0
# Fewer valid frames than this at a pixel leave no majority to call one of them an outlier.
OUTLIER_MIN_FRAMES = 3


def screen_outliers(x: torch.Tensor, valid: torch.Tensor, threshold: float = OUTLIER_THRESHOLD) -> torch.Tensor:
    """`valid` (N, T, H, W) without the frames' pixels whose brightness is an outlier among the pixel's
    valid frames: what a cloud mask would have caught had it been given.

    A cloud or its shadow brightens or darkens every band alike, while real change between dates moves
    bands apart (vegetation: NIR up, red down) or moves them little; so the test is on the band mean,
    against the median and median absolute deviation over frames at that pixel alone, in the scene
    standard deviations the input is standardised by. The MAD term spares pixels where every frame
    differs (sub-pixel jitter across a sharp edge), which are the information fusion lives on. Pointwise
    in space, so tiles and whole images screen identically and the receptive radius is unchanged; the
    median frame itself is never screened, so no pixel loses all its frames. Pixels with fewer than
    `OUTLIER_MIN_FRAMES` valid frames are left as they are.
    """
    brightness = x.mean(dim=2, keepdim=True)  # (N, T, 1, H, W)
    deviation = (brightness - masked_median(brightness, valid).unsqueeze(1)).abs()  # (N, T, 1, H, W)
    spread = OUTLIER_MADS * 1.4826 * masked_median(deviation, valid)  # (N, 1, H, W)
    outlier = deviation[:, :, 0] > torch.clamp(spread, min=threshold)
    enough = valid.sum(dim=1, keepdim=True) >= OUTLIER_MIN_FRAMES
    return valid & ~(enough & outlier)


class MedianBicubic(SRModel):
    """Bicubic of the masked median composite: the classical multi-frame baseline."""

    arch = "median-bicubic"
    temporal = True

    def forward(self, x: torch.Tensor, valid: torch.Tensor, shifts: torch.Tensor | None = None) -> torch.Tensor:
        """Shifts are accepted as every temporal model's are, and unused: the median is per pixel."""
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
