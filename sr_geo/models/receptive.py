"""Receptive radius of a model: the theoretical one from the network's structure, the effective one
measured on the trained weights.

The theoretical radius is the support of the gradient of a block of output pixels with respect to
the input, on a copy of the model whose weights are all made positive: every activation is then
positive, ReLUs pass everything and no path cancels, so the support is the architectural one even
for zero-initialised layers.

Deep generators see far (the default GAN generator 64 input pixels) but depend on distant pixels
only negligibly; a halo that large would multiply the work of small tiles. The effective radius is
the distance beyond which the input no longer matters to within the seam tolerance, and it is what
the tile planner uses as the default halo when the weights carry one.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from sr_geo.models.base import SRModel

# Largest change of a model output allowed from content beyond the halo, in the normalised units the
# model works in: 1e-3 of a band's scene standard deviation, i.e. 10 DN on a uint16 band of std 10⁴,
# well below sensor noise, so a seam between tiles is invisible.
SEAM_TOLERANCE = 1e-3

PROBE_BANDS = 3
# Probe images have 4 std of contrast, more than most of a standardised scene (a cloud edge over water
# spans a few std), so the radius holds for strong edges too; the radius grows only slowly with it.
PROBE_STD = 4.0


def theoretical_radius(model: nn.Module, scale: int, start: int = 33) -> int:
    """Largest distance, in input pixels, from an output pixel's source pixel to any input it sees."""
    # float64: along the longest path of a deep residual network the positive-weight gradient shrinks
    # below float32's range (residual scaling ×0.2 per block) and would be read as zero support.
    probe = copy.deepcopy(model).double().cpu().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in probe.parameters():
            fan = max(1, param[0].numel()) if param.dim() > 1 else 1
            param.copy_(torch.rand(param.shape, generator=generator) * 0.9 / fan + 0.1 / fan)
    size = start
    while True:
        centre = size // 2
        # One band: band exchange is pointwise in space, so more bands cannot widen the support.
        x = (torch.rand((1, 1, size, size), generator=generator, dtype=torch.float64) + 0.5).requires_grad_(True)
        y = probe(x)
        y[..., centre * scale : (centre + 1) * scale, centre * scale : (centre + 1) * scale].sum().backward()
        rows, cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1)) > 0, as_tuple=True)
        radius = int(max((rows - centre).abs().max(), (cols - centre).abs().max()))
        if radius < centre - 1:
            return radius
        size = 2 * size + 1


def effective_radius(model: SRModel, tolerance: float = SEAM_TOLERANCE, trials: int = 4, seed: int = 0) -> int:
    """Smallest r such that input changes beyond distance r move the centre output by < `tolerance`.

    The centre output is the scale × scale block of output pixels of the central input pixel, on
    `trials` probe images of PROBE_BANDS bands (white noise and band-limited texture of PROBE_STD
    standard deviations). Two changes are probed, and the worse one counts:
    replacing everything beyond r by an unrelated probe image (different content outside the halo),
    and cropping the input to the (2r+1)² window around the centre, which is exactly what a tile
    boundary at distance r does, zero padding in every layer included. The change shrinks as r grows
    (more of the input is left alone), so r is found by bisection between 0 and the theoretical radius,
    where it is zero by construction.
    """
    probe = copy.deepcopy(model).float().cpu().eval()
    limit, scale = model.theoretical_radius, model.scale
    size = 2 * limit + 1
    generator = torch.Generator().manual_seed(seed)
    inputs, others = (_probe_images(trials, size, generator) for _ in range(2))
    rows = torch.arange(size) - limit
    distance = torch.maximum(rows[:, None].abs(), rows[None, :].abs())

    def centre(x: torch.Tensor, at: int) -> torch.Tensor:
        with torch.no_grad():
            return probe(x)[..., at * scale : (at + 1) * scale, at * scale : (at + 1) * scale]

    reference = centre(inputs, limit)

    def change(r: int) -> float:
        replaced = torch.where(distance > r, others, inputs)
        cropped = inputs[..., limit - r : limit + r + 1, limit - r : limit + r + 1]
        return max(
            float((centre(replaced, limit) - reference).abs().max()),
            float((centre(cropped, r) - reference).abs().max()),
        )

    low, high = 0, limit  # every r >= high is accepted; limit needs no test, nothing beyond it matters
    while low < high:
        mid = (low + high) // 2
        if change(mid) < tolerance:
            high = mid
        else:
            low = mid + 1
    return high


def _probe_images(trials: int, size: int, generator: torch.Generator) -> torch.Tensor:
    """Alternating white noise and band-limited (1/f-like) texture, each band with std PROBE_STD."""
    noise = torch.randn((trials, PROBE_BANDS, size, size), generator=generator, dtype=torch.float64)
    freq = torch.fft.fftfreq(size, dtype=torch.float64)
    smooth = torch.fft.ifft2(torch.fft.fft2(noise) / (1 + (torch.hypot(freq[:, None], freq[None, :]) * 12) ** 2)).real
    images = torch.where((torch.arange(trials) % 2 == 0)[:, None, None, None], noise, smooth)
    images = (images - images.mean(dim=(-2, -1), keepdim=True)) / images.std(dim=(-2, -1), keepdim=True)
    return (PROBE_STD * images).float()
