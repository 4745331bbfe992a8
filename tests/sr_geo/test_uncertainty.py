"""Dihedral spread: zero for equivariant models, positive where a model guesses, plain output kept."""

from __future__ import annotations

import torch
from torch import nn

from sr_geo.models.bicubic import Bicubic
from sr_geo.uncertainty import dihedral_spread


class _Lopsided(nn.Module):
    """A network that is deliberately not rotation-equivariant (an asymmetric kernel)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor([[[[0.0, 0.0, 0.0], [0.0, 0.5, 1.0], [0.0, 0.0, 0.0]]]]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(self.conv(x), scale_factor=2, mode="nearest")


def test_equivariant_model_has_no_spread():
    x = torch.rand(2, 3, 17, 23, generator=torch.Generator().manual_seed(0))
    model = Bicubic(2)
    plain, spread = dihedral_spread(model, x)
    assert torch.equal(plain, model(x))
    assert spread.shape == (2, 3, 34, 46)
    assert float(spread.max()) < 1e-5


def test_guessing_model_has_spread_where_it_guesses():
    x = torch.zeros(1, 1, 16, 16)
    x[..., 8, 8] = 1.0  # one bright pixel: the lopsided kernel smears it one way only
    model = _Lopsided()
    with torch.no_grad():
        plain, spread = dihedral_spread(model, x)
        assert torch.equal(plain, model(x))
    # The kernel smears the pixel one step left; under rotation that step points elsewhere.
    assert float(spread[..., 16:18, 14:16].min()) > 0.1
    assert float(spread[..., :8, :8].max()) == 0.0  # far from it: nothing to guess
