"""Back-projection: make an output reproduce its input under the sensor model.

Downstream analysis (indices, change detection, radiometric comparisons with the LR archive) needs
to trust that super-resolution did not move radiometry. The iteration y ← y + P(x − D(y)), with D
the sensor model (PSF, then block mean) and P nearest-neighbour upsampling, removes the part of the
output that disagrees with the input: D∘P is an LR convolution with a positive frequency response
(the sensor's MTF), so each iteration multiplies the residual at frequency f by 1 − MTF(f). Under a
pure block-mean sensor D∘P is the identity and one iteration is exact; with the default PSF (MTF 0.3
at Nyquist) the worst-case residual falls by 30 % per iteration and the low frequencies, where
radiometry lives, converge almost at once. (The textbook adjoint P = PSF ∘ upsample applies the blur
twice and converges an order of magnitude slower at Nyquist.)

Each iteration reaches a little further (the PSF plus one LR pixel), so the tile halo grows by
`radius`; the tile planner adds it, and tiled output stays exactly equal to whole-image output.

A stack's frames each saw the ground at their own sub-pixel shift, so they disagree with one another
by their noise and hold, between them, more than any one of them. `project_frames` takes the output
towards the least-squares agreement with every valid frame, each under the sensor model at its
shift from the output's lattice (Landweber iteration with the true adjoint: the nearest-neighbour
shortcut above would only match the frames' per-pixel mean and throw the shifts away). Its gain is
in the fine detail, where the sensor's MTF is small, so it needs many iterations and a PSF close to
the sensor's: measured on the held-out stacks (docs/models/rnn_x4.md), the right MTF adds 0.3 to 0.6
dB to the rnn at 8 frames, an MTF off by 0.1 to 0.15 half of that or nothing. Being linear, the iteration
has an influence kernel that decays with distance, and `frames_radius` measures where it falls below
the seam tolerance; the planner uses that instead of the iterations' theoretical reach.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sr_geo.degrade import SensorModel
from sr_geo.models.receptive import PROBE_STD, SEAM_TOLERANCE
from sr_geo.models.temporal import SHIFT_REACH

# Landweber step for `project_frames`, in units of the largest stable step (2: the normal operator's
# largest eigenvalue, at the mean, is 1 once normalised by the frame count). 1.5 converges fastest at
# the mean without the step-2 oscillation there.
FRAMES_STEP = 1.5


@dataclass(frozen=True)
class BackProjection:
    sensor: SensorModel
    iterations: int = 8

    @property
    def radius(self) -> int:
        """Extra receptive radius in input pixels: per iteration, the PSF plus one LR pixel."""
        return self.iterations * (math.ceil(self.sensor.psf_radius / self.sensor.scale) + 1)

    def project(self, y: torch.Tensor, x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Correct outputs `y` (N, C, sH, sW) towards inputs `x` (N, C, H, W) where `valid` (N, H, W).

        Invalid input pixels carry a fill value, not an observation: they exert no pull.
        """
        s = self.sensor.scale
        weight = valid[:, None].to(y.dtype)
        for _ in range(self.iterations):
            residual = (x - self.sensor.degrade(y)) * weight
            y = y + residual.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
        return y

    def project_frames(self, y: torch.Tensor, x: torch.Tensor, valid: torch.Tensor,
                       shifts: torch.Tensor) -> torch.Tensor:
        """Correct outputs `y` (N, C, sH, sW) towards every frame of `x` (N, T, C, H, W) where `valid`
        (N, T, H, W); `shifts` (N, T, 2) are the frames' measured (dy, dx) LR pixels, the output lying at
        their mean (`sr_geo.models.rnn`). Invalid pixels exert no pull; each output pixel's step is
        divided by the number of frames that see it, so a pixel one frame sees converges as fast as one
        all frames see.
        """
        s = self.sensor.scale
        relative = (shifts - shifts.mean(dim=1, keepdim=True)).clamp(-SHIFT_REACH, SHIFT_REACH) * s
        taps = _footprint_taps(self.sensor.psf_sigma, relative.to(y.dtype), s)
        weight = valid.unsqueeze(2).to(y.dtype)
        seen = (s * s * _spread(weight, taps, s)).clamp(min=1.0)
        for _ in range(self.iterations):
            y = y + FRAMES_STEP * s * s * _spread((x - _sample(y, taps, s)) * weight, taps, s) / seen
        return y

    @property
    def frames_radius(self) -> int:
        """Input pixels beyond which content moves `project_frames`' output by less than the seam tolerance."""
        return _frames_radius(self.sensor, self.iterations)


def _footprint_taps(sigma: float, shifts: torch.Tensor, scale: int) -> torch.Tensor:
    """(N, T, 2, L) taps, per axis, of one LR pixel's footprint: the Gaussian PSF centred at each of the
    (N, T, 2) shifts (HR pixels) averaged over the pixel's `scale` HR pixels (PSF then block mean, as
    `SensorModel.degrade`, in one strided pass). L = 2R + scale is fixed by the largest shift allowed,
    so every tile uses the same taps."""
    radius = math.ceil(4.0 * sigma + SHIFT_REACH * scale)
    offsets = torch.arange(-radius, radius + scale, dtype=shifts.dtype, device=shifts.device)
    within = torch.arange(scale, dtype=shifts.dtype, device=shifts.device)
    distance = offsets[:, None] - within[None, :] - shifts[..., None, None]  # (N, T, 2, L, scale)
    taps = torch.exp(-(distance**2) / (2.0 * sigma**2)).sum(dim=-1)
    return taps / taps.sum(dim=-1, keepdim=True)


def _weights(taps: torch.Tensor, bands: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column kernels for grouped convolutions, one per (tile, band, frame)."""
    n, frames, _, length = taps.shape
    per_band = taps.unsqueeze(1).expand(n, bands, frames, 2, length).reshape(n * bands * frames, 2, length)
    return per_band[:, 0, None, :, None], per_band[:, 1, None, None, :]


def _sample(y: torch.Tensor, taps: torch.Tensor, scale: int) -> torch.Tensor:
    """Every frame's LR view of `y` (N, C, sH, sW) → (N, T, C, H, W): strided footprint convolution."""
    n, bands, height, width = y.shape
    frames, radius = taps.shape[1], (taps.shape[-1] - scale) // 2
    rows, cols = _weights(taps, bands)
    image = F.pad(y.reshape(1, n * bands, height, width), (radius,) * 4, mode="reflect")
    image = F.conv2d(image, cols, stride=(1, scale), groups=n * bands)  # one output channel per (band, frame)
    image = F.conv2d(image, rows, stride=(scale, 1), groups=n * bands * frames)
    return image.reshape(n, bands, frames, height // scale, width // scale).transpose(1, 2)


def _spread(residual: torch.Tensor, taps: torch.Tensor, scale: int) -> torch.Tensor:
    """The adjoint of `_sample` (away from the image border), summed over frames: (N, T, C, H, W) → (N, C, sH, sW)."""
    n, frames, bands, height, width = residual.shape
    radius = (taps.shape[-1] - scale) // 2
    rows, cols = _weights(taps, bands)
    image = residual.transpose(1, 2).reshape(1, n * bands * frames, height, width)
    image = F.conv_transpose2d(image, rows, stride=(scale, 1), groups=n * bands * frames)
    image = F.conv_transpose2d(image, cols, stride=(1, scale), groups=n * bands)  # sums the frames
    image = image[..., radius : radius + scale * height, radius : radius + scale * width]
    return image.reshape(n, bands, scale * height, scale * width)


@functools.lru_cache(maxsize=16)
def _frames_radius(sensor: SensorModel, iterations: int) -> int:
    """The iteration is linear in the model's output and in the frames, so how far it reaches is read
    off its influence kernels: the responses to an impulse in either, at shift 0 and for one frame
    (frames at one shift act as one). The radius is the smallest LR distance beyond which a change of
    2·PROBE_STD everywhere moves the centre by less than SEAM_TOLERANCE, plus the shifts' reach. The
    probe grows until the radius lies well inside it, so its own border cannot shorten the answer."""
    s, limit = sensor.scale, 16
    projection = BackProjection(sensor, iterations)
    while True:
        size = 2 * limit + 1
        x = torch.zeros(2, 1, 1, size, size)
        y = torch.zeros(2, 1, s * size, s * size)
        x[0, 0, 0, limit, limit] = 1.0  # an observation
        y[1, 0, s * limit + s // 2, s * limit + s // 2] = 1.0  # an output pixel
        response = projection.project_frames(y, x, torch.ones(2, 1, size, size, dtype=torch.bool),
                                             torch.zeros(2, 1, 2))
        blocks = response.abs().sum(dim=(0, 1)).reshape(size, s, size, s).sum(dim=(1, 3))
        rows = torch.arange(size) - limit
        distance = torch.maximum(rows[:, None].abs(), rows[None, :].abs())
        tail = torch.stack([blocks[distance > r].sum() for r in range(limit + 1)])
        radius = int(torch.nonzero(2 * PROBE_STD * tail < SEAM_TOLERANCE)[0, 0])
        if 2 * radius <= limit:
            return radius + math.ceil(SHIFT_REACH)
        limit *= 2
