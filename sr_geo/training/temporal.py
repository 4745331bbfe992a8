"""Synthetic time series from one high-resolution image: what a satellite revisiting one place records.

Every frame is the HR image through the same sensor model as the single-image models see
(`sr_geo.degrade.SensorModel`: Gaussian PSF set by the MTF at LR Nyquist, block-mean downsampling,
white noise), one sensor per stack, plus what differs between real acquisitions:

- geolocation jitter: a sub-pixel translation per frame, uniform within ±`jitter` LR pixels on each
  axis, applied exactly by centring the separable Gaussian PSF on the shifted position (no
  interpolation of the HR image); the model is told each shift as registration would measure it,
  the true one plus a Gaussian error of `registration_error` LR pixels (`sr_geo.registration`
  measures 0.01–0.03 px on clear 256² windows; 0.05 covers clouds and smaller windows);
- radiometry: a gain (contrast, about the band mean) and an offset (brightness, in band standard
  deviations) per frame;
- noise: an independent realisation per frame;
- clouds: a mask per frame; a frame is clear with probability `clear`, fully masked (a missing
  acquisition) with probability `missing`, otherwise covered to a uniform fraction in `cover` by a
  smooth random field thresholded at that quantile. Cloudy pixels are set to the frame's brightest
  value, as a cloud would be, and marked invalid.

Acquisitions' jitters are independent, so the ground truth lies off the frames' centroid by their mean
jitter, which no registration can tell (it measures only the frames' differences); `sr-geo eval --stack`
draws them so, and a model's output is off the truth by that much, as it would be in reality. Training
(`TemporalSampler`) draws the same shifts `centred` on the stack: their mean is subtracted (then clamped
to ±jitter, which moves 3 % of 8-frame shifts and their centroid by 0.002 LR px on average), so the HR
target lies at the frames' centroid, where a temporal model puts its output (`sr_geo.models.rnn`), and the
loss never asks for an offset the frames cannot tell. A single frame is then exactly on the target's
lattice, as in single-image training. Everything else is the same synthesis.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from sr_geo.degrade import SensorModel, separable_convolve
from sr_geo.grid import area_downsample
from sr_geo.training.data import Batch, PatchSampler, ValidationPatch, _choice
from sr_geo.training.split import Split

MAX_FRAMES = 8  # training stacks have 1..MAX_FRAMES frames; validation stacks MAX_FRAMES


@dataclass(frozen=True)
class StackSynthesis:
    """How the frames of one synthetic stack differ; the defaults, `centred`, trained `rnn_x4`; without it they drive
    stack evaluation."""

    jitter: float = 0.5
    gain: tuple[float, float] = (0.9, 1.1)
    offset: float = 0.05
    clear: float = 0.3
    missing: float = 0.05
    cover: tuple[float, float] = (0.05, 0.6)
    registration_error: float = 0.05
    centred: bool = False

    def kernel_radius(self, sensor: SensorModel) -> int:
        """HR pixels the shifted PSF reaches: the margin a window needs around its patch."""
        return math.ceil(4.0 * sensor.psf_sigma + self.jitter * sensor.scale)

    def frames(
        self, window: torch.Tensor, count: int, sensor: SensorModel, margin: int, generator: torch.Generator,
        band_mean: torch.Tensor | None = None, band_std: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`count` LR frames (T, C, h, w), their validity (T, h, w) and their shifts (T, 2) as registration
        measures them, of the HR `window` (C, H, W) without its `margin` (HR pixels, a multiple of the
        scale). A frame's pixel i samples the scene at i + its true shift (LR pixels).

        Gain acts about `band_mean` (C,), offset and noise scale with `band_std` (C,); the defaults, 0 and 1,
        are those of standardised training data, so raw data units given their statistics see the same."""
        s = sensor.scale
        if margin % s or self.kernel_radius(sensor) > margin:
            raise ValueError(f"margin {margin} must be a multiple of {s} and at least {self.kernel_radius(sensor)}")
        mean = (torch.zeros(window.shape[0]) if band_mean is None else band_mean).reshape(-1, 1, 1)
        std = (torch.ones(window.shape[0]) if band_std is None else band_std).reshape(-1, 1, 1)
        crop = slice(margin // s, (window.shape[-2] - margin) // s), slice(margin // s, (window.shape[-1] - margin) // s)
        shifts = (torch.rand((count, 2), generator=generator, dtype=torch.float64) * 2 - 1) * self.jitter * s
        if self.centred:
            shifts = (shifts - shifts.mean(dim=0)).clamp(-self.jitter * s, self.jitter * s)
        lr = area_downsample(shifted_blur(window, sensor.psf_sigma, shifts), s)[:, :, crop[0], crop[1]]
        gains = [_uniform(generator, *self.gain) for _ in range(count)]
        offsets = [_uniform(generator, -self.offset, self.offset) for _ in range(count)]
        gains, offsets = torch.tensor(gains).reshape(-1, 1, 1, 1), torch.tensor(offsets).reshape(-1, 1, 1, 1)
        lr = mean + gains * (lr - mean) + offsets * std
        if sensor.noise_std > 0:
            lr = lr + sensor.noise_std * std * torch.randn(lr.shape, generator=generator)
        valid = torch.stack([self.clouds(lr.shape[-2:], generator) for _ in range(count)])
        bright = lr.amax(dim=(-2, -1), keepdim=True)
        measured = shifts / s + self.registration_error * torch.randn(shifts.shape, generator=generator, dtype=torch.float64)
        return torch.where(valid.unsqueeze(1), lr, bright), valid, measured.float()

    def clouds(self, shape: torch.Size, generator: torch.Generator) -> torch.Tensor:
        """Validity (h, w) of one frame: clear, missing, or a smooth cloud field at a random cover."""
        u = float(torch.rand(1, generator=generator, dtype=torch.float64))
        if u < self.clear:
            return torch.ones(shape, dtype=torch.bool)
        if u < self.clear + self.missing:
            return torch.zeros(shape, dtype=torch.bool)
        cover = _uniform(generator, *self.cover)
        cells = 2 + _choice(generator, 4)
        field = F.interpolate(torch.randn((1, 1, cells, cells), generator=generator), size=tuple(shape),
                              mode="bicubic", align_corners=False)[0, 0]
        return field <= torch.quantile(field.flatten(), 1.0 - cover)

    def card(self) -> dict:
        """Model-card fields: units are LR pixels (jitter), band standard deviations (offset), fractions."""
        return {
            "frames": f"1..{MAX_FRAMES} per training stack (uniform, one count per batch); {MAX_FRAMES} in validation",
            "per_frame": "sub-pixel shift (shifted PSF), gain and offset, own noise, synthetic cloud mask; "
                         "one sensor model per stack",
            **asdict(self),
        }


def shifted_blur(hr: torch.Tensor, sigma: float, shifts: torch.Tensor) -> torch.Tensor:
    """The Gaussian PSF centred at each (dy, dx) of `shifts` (T, 2) HR pixels, separable, reflect-padded:
    (C, H, W) in, (T, C, H, W) out, every frame in one grouped convolution per axis.

    Output pixel i of frame t is the blurred scene at i + shift_t: the frame sees the scene moved by -shift_t.
    """
    radius = math.ceil(4.0 * sigma + float(shifts.abs().max()))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64) - shifts.unsqueeze(-1)  # (T, 2, K)
    kernels = torch.exp(-(taps**2) / (2.0 * sigma**2))
    kernels = kernels / kernels.sum(dim=-1, keepdim=True)
    return separable_convolve(hr.unsqueeze(0).expand(shifts.shape[0], -1, -1, -1), kernels)


class TemporalSampler(PatchSampler):
    """Training stacks for temporal models: one HR window per sample, synthetic frames of it.

    Windows are drawn exactly as `PatchSampler` draws them (same split, margin, band subsets and
    augmentation); a batch has one frame count, 1..MAX_FRAMES. Invalid pixels are 0, as the
    pipeline's normalisation hands them to the model.
    """

    synthesis = StackSynthesis(centred=True)

    def batch(self, step: int, size: int) -> Batch:
        generator = self.step_generator(step)
        k = _choice(generator, self.max_bands) + 1
        frames = _choice(generator, MAX_FRAMES) + 1
        lrs, valids, shifts, hrs = [], [], [], []
        for window in self.windows(generator, k, size):
            lr, valid, shift, hr = self._stack(window, frames, generator)
            lrs.append(lr)
            valids.append(valid)
            shifts.append(shift)
            hrs.append(hr)
        return Batch(torch.stack(lrs), torch.stack(hrs), torch.stack(valids), torch.stack(shifts))

    def validation(self, split: Split, count: int) -> list[ValidationPatch]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 - 1)
        patches = []
        for raster, window in self.validation_windows(split, count, generator):
            lr, valid, shifts, hr = self._stack(window, MAX_FRAMES, generator)
            patches.append(ValidationPatch(raster.name, lr[None], hr[None], raster.data_range, valid[None], shifts[None]))
        return patches

    def _stack(self, window: torch.Tensor, frames: int, generator: torch.Generator):
        sensor = self.ranges.sample(self.scale, generator)
        lr, valid, shifts = self.synthesis.frames(window, frames, sensor, self.margin, generator)
        m, p = self.margin, self.patch
        return torch.where(valid.unsqueeze(1), lr, 0.0), valid, shifts, window[:, m : m + p, m : m + p]


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + float(torch.rand(1, generator=generator, dtype=torch.float64)) * (high - low)
