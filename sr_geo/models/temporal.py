"""What temporal models share: the masked median and mean composites, the median's bicubic baseline,
the screening of unmasked clouds against the median, and the single-image view through which
`sr_geo.models.receptive` measures their receptive radius.

A temporal model maps frames x (N, T, C, H, W) and their validity (N, T, H, W) to (N, C, H·s, W·s).
Invalid pixels hold 0, as the pipeline's normalisation leaves them, and must not influence the output
through their values; only through the validity itself.
"""

from __future__ import annotations

import torch

from sr_geo.degrade import separable_convolve
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


# Shifts reach ±SHIFT_REACH LR pixels (farther ones count as that reach: one frame cannot be moved farther by
# aligning it than a temporal model's shift kernels can place it); a cubic kernel then reads ALIGN_RADIUS
# pixels around, which the model's receptive radius adds.
SHIFT_REACH = 1.0
ALIGN_RADIUS = 2


def align_frames(x: torch.Tensor, valid: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Each frame (N, T, C, H, W) resampled by its shift (N, T, 2) onto the lattice of shift 0, and its validity.

    A frame's pixel i samples the scene at i + shift, so the frame is read at i − shift, by Keys cubic
    interpolation (a = −0.5), separable. The composites a model averages or takes the median of are then
    composites of one scene position per pixel instead of a blur over the frames' jitter; the frames
    themselves still enter fusion unresampled. A resampled pixel is valid only where every tap it reads is,
    so a cloud's edge never leaks into its neighbours. Shifts of 0 leave a frame exactly as it is.
    """
    n, frames, bands, height, width = x.shape
    offsets = torch.arange(-ALIGN_RADIUS, ALIGN_RADIUS + 1, device=x.device, dtype=x.dtype)
    taps = keys_cubic(offsets + shifts.to(x.dtype).clamp(-SHIFT_REACH, SHIFT_REACH).reshape(n * frames, 2, 1))
    aligned = separable_convolve(x.reshape(n * frames, bands, height, width), taps, outside=0.0)
    gaps = separable_convolve((~valid).to(x.dtype).reshape(n * frames, 1, height, width), taps.abs(), outside=1.0)
    return aligned.reshape(x.shape), valid & (gaps.reshape(valid.shape) < 1e-6)


def aligned_composites(x: torch.Tensor, valid: torch.Tensor, shifts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The masked median and mean composites (N, C, H, W) of the frames aligned by `align_frames`; where no
    aligned frame is valid (a few pixels at cloud and scene edges) those of the frames as they are."""
    aligned, aligned_valid = align_frames(x, valid, shifts)
    covered = aligned_valid.any(dim=1, keepdim=True)  # (N, 1, H, W)
    frames = torch.where(covered.unsqueeze(2), aligned, x)
    frames_valid = torch.where(covered, aligned_valid, valid)
    return masked_median(frames, frames_valid), masked_mean(frames, frames_valid)


def keys_cubic(t: torch.Tensor) -> torch.Tensor:
    """The Keys cubic convolution kernel (a = −0.5, as GDAL's and PIL's bicubic): 1 at 0, 0 at the other integers."""
    t = t.abs()
    near = (1.5 * t - 2.5) * t * t + 1.0
    far = ((-0.5 * t + 2.5) * t - 4.0) * t + 2.0
    return torch.where(t <= 1.0, near, torch.where(t < 2.0, far, torch.zeros_like(t)))


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


# Half a pixel each way: every cubic tap of `align_frames` is then non-zero, so the probe reaches ALIGN_RADIUS.
PROBE_SHIFT = 0.5


class SingleImageView(SRModel):
    """A temporal model seen as a single-image one: the image repeated as `frames` valid frames, their
    shifts spread over ±PROBE_SHIFT LR pixels on both axes.

    `sr_geo.models.receptive` probes models with (N, C, H, W) images; through this view it measures
    temporal models unchanged. The theoretical radius it finds holds for any number of frames when
    the model's recurrence is pointwise in space (as `sr_geo.models.rnn.RNN`'s is), because every frame
    then reaches the output through the same spatial paths; the shifts of both signs make it include the
    reach of aligning frames (`align_frames`) on both sides.
    """

    def __init__(self, model: SRModel, frames: int = 3) -> None:
        super().__init__(model.scale)
        self.model, self.frames = model, frames

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        stack = x.unsqueeze(1).expand(-1, self.frames, -1, -1, -1)
        valid = torch.ones((x.shape[0], self.frames, *x.shape[-2:]), dtype=torch.bool, device=x.device)
        spread = torch.linspace(-PROBE_SHIFT, PROBE_SHIFT, self.frames, device=x.device, dtype=x.dtype)
        return self.model(stack, valid, spread.reshape(1, -1, 1).expand(x.shape[0], -1, 2))
