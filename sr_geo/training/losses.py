"""Losses, all on standardised pixels (one unit = one scene std of the band).

The generator of the GAN is trained with L1 (fidelity), a relativistic average adversarial loss
(realism), and perceptual-style terms that need no pretrained network: feature matching on the
discriminator's own features (Salimans et al. 2016; the paired form of pix2pixHD), a radial
power-spectrum loss that asks each patch for the right amount of energy at each spatial frequency,
which L1 alone under-rewards (its optimum under uncertainty is a blur), the batch's energy above
half Nyquist, which keeps the most textured ground from being left short, and a chroma term that keeps
synthesised texture coherent across bands.
"""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

from sr_geo.metrics import frequency_rings, high_rings


def l1(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    return (sr - hr).abs().mean()


def relativistic_discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """RaGAN (Jolicoeur-Martineau 2018, as in ESRGAN): real should look more real than the average fake,
    and fake less real than the average real. `real`, `fake` are logits of the same shape."""
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real - fake.mean(), torch.ones_like(real))
        + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.zeros_like(fake))
    )


def relativistic_generator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """The discriminator's loss with the labels swapped: the generator gains from both terms."""
    return 0.5 * (
        F.binary_cross_entropy_with_logits(real - fake.mean(), torch.zeros_like(real))
        + F.binary_cross_entropy_with_logits(fake - real.mean(), torch.ones_like(fake))
    )


def feature_matching(fake: list[torch.Tensor], real: list[torch.Tensor]) -> torch.Tensor:
    """Mean L1 between discriminator features of each generated image and of its own HR target."""
    return torch.stack([(f - r.detach()).abs().mean() for f, r in zip(fake, real, strict=True)]).mean()


def radial_spectrum(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Mean absolute difference of the log radially averaged power spectra of each band image.

    Phase-free, so it asks for texture of the right strength and scale without demanding that it sit
    exactly where the HR had it, which the LR cannot tell (Durall et al. 2020 match the same profile).
    In log power every ring of frequencies weighs alike: the faint rings beyond the LR's Nyquist, where
    L1's optimum is a blur and a linear amplitude loss barely registers the shortfall, count as much as
    the strong low ones. Rings are `sr_geo.metrics.frequency_rings`, as in the HF-energy metric. `eps`
    (in standardised units squared) keeps flat patches from demanding texture they do not have.
    """
    rings = _ring_means(sr.shape[-2], sr.shape[-1], sr.device)
    return (torch.log(_power_profile(sr, rings) + eps) - torch.log(_power_profile(hr, rings) + eps)).abs().mean()


def pooled_high_frequency(sr: torch.Tensor, hr: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Absolute log ratio of the power above half Nyquist summed over the batch, output over HR.

    `radial_spectrum` compares each band image with its own target in log power, so its pull is the
    same for a smooth patch given a little too much texture as for a forest given far too little: it
    settles at the typical patch, and the most textured ground, which holds most of a scene's fine
    detail, stays several times short of it. Summed over the batch before the log, each patch counts by
    its energy, as in the HF-energy share of a whole scene. Same rings as `radial_spectrum` and the metric.
    """
    rings = _ring_means(sr.shape[-2], sr.shape[-1], sr.device)
    high = torch.from_numpy(high_rings(sr.shape[-2], sr.shape[-1])).to(sr.device)
    return (torch.log(_power_profile(sr, rings)[:, high].sum() + eps)
            - torch.log(_power_profile(hr, rings)[:, high].sum() + eps)).abs()


def chroma(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """L1 between the output's and the HR's deviations from their mean over bands.

    The generator synthesises texture band by band (its bands share only their mean between blocks), so
    texture the LR cannot pin down comes out with a different pattern in each band: colour grain, and a
    spectral angle to the HR well above the CNN's. Weighting this term pulls the bands' differences
    towards the HR's while leaving the detail the bands share to the texture terms. Zero for one band.
    """
    return ((sr - sr.mean(dim=1, keepdim=True)) - (hr - hr.mean(dim=1, keepdim=True))).abs().mean()


def _power_profile(x: torch.Tensor, rings: torch.Tensor) -> torch.Tensor:
    """(N, C, H, W) → (N·C, rings): mean power per ring, mean removed, orthonormal FFT."""
    power = torch.fft.rfft2(x - x.mean(dim=(-2, -1), keepdim=True), norm="ortho").abs().square()
    return power.flatten(0, 1).flatten(1) @ rings


@functools.lru_cache(maxsize=8)
def _ring_means(height: int, width: int, device: torch.device) -> torch.Tensor:
    """(H·(W//2+1), rings) matrix averaging a one-sided spectrum over rings one frequency bin wide.

    Columns the one-sided spectrum holds once for two of the full spectrum count twice; rings stop
    at Nyquist and the DC ring is left out.
    """
    ring = torch.from_numpy(frequency_rings(height, width, one_sided=True)).flatten()
    count = min(height, width) // 2  # rings 1..count
    multiplicity = torch.ones(width // 2 + 1, dtype=torch.float64)
    multiplicity[1 : (width + 1) // 2] = 2
    weights = multiplicity.expand(height, -1).flatten()
    member = (ring[:, None] == torch.arange(1, count + 1)[None, :]).double() * weights[:, None]
    return (member / member.sum(dim=0).clamp(min=1)).float().to(device)
