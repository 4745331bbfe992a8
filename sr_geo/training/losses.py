"""Losses, all on standardised pixels (one unit = one scene std of the band).

The generator of the GAN is trained with L1 (fidelity), a relativistic average adversarial loss
(realism), and two perceptual-style terms that need no pretrained network: feature matching on the
discriminator's own features (Salimans et al. 2016; the paired form of pix2pixHD) and an
amplitude-spectrum loss that asks for the right amount of energy at each spatial frequency, which
L1 alone under-rewards (its optimum under uncertainty is a blur).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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


def amplitude_spectrum(sr: torch.Tensor, hr: torch.Tensor) -> torch.Tensor:
    """Mean L1 between the 2-D amplitude spectra of each band (orthonormal FFT, so one unit = one pixel unit).

    Phase is left to L1: matching amplitudes alone asks for texture of the right strength and scale
    without demanding it sit exactly where the HR had it, which the LR often cannot tell.
    """
    return (torch.fft.rfft2(sr, norm="ortho").abs() - torch.fft.rfft2(hr, norm="ortho").abs()).abs().mean()
