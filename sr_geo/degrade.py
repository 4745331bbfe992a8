"""The sensor model that turns a high-resolution (HR) image into the low-resolution (LR) image a
coarser sensor would have recorded: the forward model behind self-supervised training (degrade HR,
learn to invert) and behind evaluation (degrade an SR output back onto the input grid and compare).

Grid convention, the same as `sr_geo.grid`: LR pixel (i, j) covers HR pixels
[i·s, (i+1)·s) × [j·s, (j+1)·s), so LR pixel edges lie on HR pixel edges and there is no half-pixel shift.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sr_geo.grid import area_downsample


@dataclass(frozen=True)
class SensorModel:
    """Gaussian PSF blur, then block-mean downsampling by `scale`, then additive Gaussian noise.

    Physics. An imaging system's optics, detector footprint and motion blur together act as a
    point-spread function (PSF) whose Fourier transform, the modulation transfer function (MTF), sets
    how much contrast survives at each spatial frequency. Sensor specifications quote the MTF at the
    Nyquist frequency of the sensor's own (LR) sampling grid, typically 0.15-0.45 for Sentinel-2 and
    Landsat, so that is the parameter here. A Gaussian PSF of standard deviation σ (HR pixels),
    exp(-x² / 2σ²), has the MTF exp(-2π²σ²f²) at f cycles per HR pixel. The LR Nyquist frequency is
    half a cycle per LR pixel, f_N = 1 / (2·scale) cycles per HR pixel, so requiring
    MTF(f_N) = mtf_nyquist gives

        exp(-π²σ² / (2·scale²)) = mtf_nyquist   ⇒   σ = scale · sqrt(-2 ln mtf_nyquist) / π.

    This is the "MTF-matched" Gaussian of the pansharpening literature (Aiazzi et al. 2006): the
    Gaussian alone carries the quoted MTF. The block mean that follows integrates each LR pixel's
    footprint, which multiplies the chain's response at f_N by a further sinc(1/2) = 2/π ≈ 0.64.
    Noise is white, additive and Gaussian with standard deviation `noise_std` in data units.
    """

    scale: int
    mtf_nyquist: float = 0.3
    noise_std: float = 0.0

    def __post_init__(self) -> None:
        # At scale 1 the LR Nyquist is the HR Nyquist, where a sampled PSF's MTF is aliased.
        if not isinstance(self.scale, numbers.Integral) or self.scale < 2:
            raise ValueError(f"scale must be an integer >= 2, got {self.scale!r}")
        if not 0.0 < self.mtf_nyquist < 1.0:
            raise ValueError(f"mtf_nyquist must be in (0, 1), got {self.mtf_nyquist}")
        if self.noise_std < 0.0:
            raise ValueError(f"noise_std must be non-negative, got {self.noise_std}")

    @property
    def psf_sigma(self) -> float:
        """Standard deviation of the Gaussian PSF in HR pixels (derivation in the class docstring)."""
        return self.scale * math.sqrt(-2.0 * math.log(self.mtf_nyquist)) / math.pi

    def blur(self, hr: torch.Tensor) -> torch.Tensor:
        """The PSF alone, separable, reflect-padded; (N, C, H, W) in, same shape out."""
        n, c, height, width = hr.shape
        kernel = gaussian_psf_kernel(self.psf_sigma).to(device=hr.device, dtype=hr.dtype)
        radius = len(kernel) // 2
        x = hr.reshape(n * c, 1, height, width)
        x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="reflect"), kernel.view(1, 1, 1, -1))
        x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="reflect"), kernel.view(1, 1, -1, 1))
        return x.reshape(n, c, height, width)

    @property
    def psf_radius(self) -> int:
        """Half-width of the PSF kernel in HR pixels."""
        return len(gaussian_psf_kernel(self.psf_sigma)) // 2

    def degrade(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Simulate the LR observation of a batch `hr` shaped (N, C, H, W), H and W multiples of `scale`.

        Reflect padding keeps the blur from darkening tile borders, which a model would otherwise
        learn to undo. Pass a `generator` for reproducible noise; it may live on the CPU while `hr`
        is on a GPU.
        """
        if hr.ndim != 4:
            raise ValueError(f"expected a batch shaped (N, C, H, W), got shape {tuple(hr.shape)}")
        x = self.blur(hr)
        lr = area_downsample(x, self.scale)
        if self.noise_std > 0.0:
            noise_device = generator.device if generator is not None else lr.device
            noise = torch.randn(lr.shape, generator=generator, device=noise_device, dtype=lr.dtype)
            lr = lr + self.noise_std * noise.to(lr.device)
        return lr


@dataclass(frozen=True)
class DegradationRanges:
    """Ranges from which training draws a fresh `SensorModel` per sample.

    A model trained on one exact PSF and noise level overfits to it and fails on real sensors whose
    MTF is known only roughly and varies across the focal plane; randomising over plausible values
    makes it robust. `noise_std` is relative to the data range: training tiles are normalised to
    [0, 1], so it is also in data units there.
    """

    mtf_nyquist: tuple[float, float] = (0.15, 0.45)
    noise_std: tuple[float, float] = (0.0, 0.02)

    def __post_init__(self) -> None:
        lo, hi = self.mtf_nyquist
        if not 0.0 < lo <= hi < 1.0:
            raise ValueError(f"mtf_nyquist range must satisfy 0 < low <= high < 1, got {self.mtf_nyquist}")
        lo, hi = self.noise_std
        if not 0.0 <= lo <= hi:
            raise ValueError(f"noise_std range must satisfy 0 <= low <= high, got {self.noise_std}")

    def sample(self, scale: int, generator: torch.Generator | None = None) -> SensorModel:
        """Draw MTF and noise level independently and uniformly from their ranges."""
        u_mtf, u_noise = torch.rand(2, generator=generator, dtype=torch.float64).tolist()
        return SensorModel(
            scale=scale,
            mtf_nyquist=self.mtf_nyquist[0] + u_mtf * (self.mtf_nyquist[1] - self.mtf_nyquist[0]),
            noise_std=self.noise_std[0] + u_noise * (self.noise_std[1] - self.noise_std[0]),
        )


def gaussian_psf_kernel(sigma: float, radius: int | None = None) -> torch.Tensor:
    """1-D Gaussian taps (float64, summing to 1) of the separable PSF, of length 2·radius + 1.

    The default radius, ceil(4σ), keeps the truncated tail below 0.01 % of the mass, so the realised
    MTF matches the analytic one; sampling at pixel centres moves the MTF at LR Nyquist by under 0.2 %
    for every scale >= 2 and mtf_nyquist <= 0.45.
    """
    if sigma <= 0:
        raise ValueError(f"sigma must be positive, got {sigma}")
    if radius is None:
        radius = max(1, math.ceil(4.0 * sigma))
    taps = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-(taps**2) / (2.0 * sigma**2))
    return kernel / kernel.sum()


def separable_convolve(images: torch.Tensor, taps: torch.Tensor, outside: float | None = None) -> torch.Tensor:
    """Each of the (M, C, H, W) `images` convolved with its own separable `taps` (M, 2, K), K odd: taps[:, 0]
    along H, taps[:, 1] along W, centred. Beyond the image: reflected (`outside` None) or the constant `outside`.

    One grouped convolution per axis serves a whole batch of per-image kernels (a PSF centred on each frame's
    shift, an interpolation kernel per frame), so no per-kernel loop runs.
    """
    m, channels, height, width = images.shape
    radius = taps.shape[-1] // 2
    groups = m * channels
    rows = taps[:, 0].to(images.dtype).repeat_interleave(channels, dim=0)[:, None, :, None]
    cols = taps[:, 1].to(images.dtype).repeat_interleave(channels, dim=0)[:, None, None, :]
    x = images.reshape(1, groups, height, width)
    x = F.pad(x, (radius,) * 4, mode="reflect") if outside is None else F.pad(x, (radius,) * 4, value=outside)
    x = F.conv2d(F.conv2d(x, cols, groups=groups), rows, groups=groups)
    return x.reshape(m, channels, height, width)

