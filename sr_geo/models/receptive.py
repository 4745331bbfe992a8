"""Receptive radius of a model, computed from the network itself rather than guessed.

The theoretical radius is the support of the gradient of a block of output pixels with respect to
the input, on a copy of the model whose weights are all made positive: every activation is then
positive, ReLUs pass everything and no path cancels, so the support is the architectural one even
for zero-initialised layers.
"""

from __future__ import annotations

import copy

import torch
from torch import nn


def theoretical_radius(model: nn.Module, bands: int, scale: int, start: int = 33) -> int:
    """Largest distance, in input pixels, from an output pixel's source pixel to any input it sees."""
    probe = copy.deepcopy(model).float().cpu().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in probe.parameters():
            fan = max(1, param[0].numel()) if param.dim() > 1 else 1
            param.copy_(torch.rand(param.shape, generator=generator) * 0.9 / fan + 0.1 / fan)
    size = start
    while True:
        centre = size // 2
        x = (torch.rand((1, bands, size, size), generator=generator) + 0.5).requires_grad_(True)
        y = probe(x)
        y[..., centre * scale : (centre + 1) * scale, centre * scale : (centre + 1) * scale].sum().backward()
        rows, cols = torch.nonzero(x.grad.abs().sum(dim=(0, 1)) > 0, as_tuple=True)
        radius = int(max((rows - centre).abs().max(), (cols - centre).abs().max()))
        if radius < centre - 1:
            return radius
        size = 2 * size + 1
