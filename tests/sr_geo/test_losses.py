"""The GAN's spectral losses (phase-free, in log power, on the rings of the HF metric) and its chroma term."""

from __future__ import annotations

import math

import numpy as np
import torch

from sr_geo.metrics import high_frequency_energy
from sr_geo.training.losses import _power_profile, _ring_means, chroma, pooled_high_frequency, radial_spectrum


def texture(seed: int, shape: tuple[int, ...] = (2, 3, 48, 40)) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=generator).cumsum(-1) + torch.randn(shape, generator=generator)


def test_identical_images_and_shifted_copies_cost_nothing() -> None:
    x = texture(0)
    assert radial_spectrum(x, x).item() == 0.0
    # A circular shift changes only the phase: texture in the wrong place is not penalised.
    assert radial_spectrum(torch.roll(x, shifts=(5, -7), dims=(-2, -1)), x).item() < 1e-5


def test_every_ring_counts_in_log_power() -> None:
    x = texture(1)
    # Twice the amplitude is four times the power in every ring: log 4, however faint the ring.
    assert math.isclose(radial_spectrum(2 * x, x, eps=0.0).item(), math.log(4), rel_tol=1e-5)
    # A constant offset is no texture.
    assert radial_spectrum(x + 3.0, x).item() < 1e-5


def test_rings_are_those_of_the_high_frequency_metric() -> None:
    """The loss's profile, summed above half Nyquist, gives `high_frequency_energy` exactly: training
    asks for the quantity the evaluation reports."""
    for shape in ((1, 1, 48, 40), (1, 1, 33, 64)):
        img = texture(2, shape)
        profile = _power_profile(img, _ring_means(*shape[-2:], img.device))[0].double().numpy()
        frequency = np.arange(1, len(profile) + 1) / min(shape[-2:])
        share = profile[frequency > 0.25].sum() / profile.sum()
        assert math.isclose(share, high_frequency_energy(img[0].numpy()), rel_tol=1e-5)


def test_pooled_high_frequency_weighs_patches_by_their_energy() -> None:
    """Texture moved from the patch that had it to a smooth one costs nothing pooled, much per patch;
    a shortfall of fine detail on the textured patch costs what it costs in the batch's total."""
    textured, smooth = texture(1, (1, 1, 48, 48)), 0.01 * texture(2, (1, 1, 48, 48))
    hr = torch.cat([textured, smooth])
    assert pooled_high_frequency(hr, hr).item() == 0.0
    assert pooled_high_frequency(torch.cat([smooth, textured]), hr).item() < 1e-4
    assert radial_spectrum(torch.cat([smooth, textured]), hr).item() > 4.0
    assert math.isclose(pooled_high_frequency(2 * hr, hr, eps=0.0).item(), math.log(4), rel_tol=1e-5)
    half = torch.cat([0.5 * textured, smooth])
    assert pooled_high_frequency(half, hr).item() > 0.9 * math.log(4)  # the smooth patch's share is tiny


def test_chroma_ignores_what_the_bands_share_and_counts_what_they_do_not() -> None:
    hr = texture(3)
    shared = texture(4)[:, :1]  # the same detail added to every band
    assert chroma(hr + shared, hr).item() < 1e-6
    assert chroma(hr[:, :1] + 5.0, hr[:, :1]).item() == 0.0  # one band has no chroma
    grain = torch.zeros_like(hr)
    grain[:, 0] = 1.0  # one band of three one unit off: deviations from the mean 2/3, 1/3, 1/3
    assert math.isclose(chroma(hr + grain, hr).item(), (2 / 3 + 1 / 3 + 1 / 3) / 3, rel_tol=1e-5)
