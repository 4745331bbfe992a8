"""One optimisation step of each kind: L1 for the CNN and GAN pretraining, adversarial for the GAN."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sr_geo.inference import autocast
from sr_geo.models.base import SRModel
from sr_geo.models.discriminator import PatchDiscriminator
from sr_geo.training import losses
from sr_geo.training.config import TrainConfig


@dataclass
class Trainer:
    """The networks and optimizers of a run; `step` updates them on one batch and returns the loss terms."""

    config: TrainConfig
    generator: SRModel
    optimizer: torch.optim.Optimizer
    discriminator: PatchDiscriminator | None = None
    d_optimizer: torch.optim.Optimizer | None = None

    def step(self, step: int, lr: torch.Tensor, hr: torch.Tensor, rate: float,
             valid: torch.Tensor | None = None, shifts: torch.Tensor | None = None) -> dict[str, float]:
        """`valid` and `shifts` are the frames' validity and shifts for temporal generators (which the GAN is not)."""
        for opt in (self.optimizer, self.d_optimizer):
            for group in opt.param_groups if opt is not None else ():
                group["lr"] = rate
        if self.discriminator is None or step < self.config.pretrain_steps:
            return self._l1_step(lr, hr, valid, shifts)
        return self._adversarial_step(lr, hr)

    def _networks(self):
        """Where the networks run: in the run's precision. Losses take their outputs back in float32 (the
        spectral terms' FFTs among them)."""
        return autocast(next(self.generator.parameters()).device, self.config.precision)

    def _l1_step(self, lr: torch.Tensor, hr: torch.Tensor, valid: torch.Tensor | None,
                 shifts: torch.Tensor | None) -> dict[str, float]:
        with self._networks():
            sr = self.generator(lr) if valid is None else self.generator(lr, valid, shifts)
        loss = losses.l1(sr.float(), hr)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return {"l1": loss.item()}

    def _adversarial_step(self, lr: torch.Tensor, hr: torch.Tensor) -> dict[str, float]:
        """Generator first against the current discriminator (frozen), then the discriminator, as ESRGAN."""
        c = self.config
        self.discriminator.requires_grad_(False)
        with self._networks():
            sr = self.generator(lr)
            with torch.no_grad():
                real_logits, real_features = _float(self.discriminator(hr))
            fake_logits, fake_features = _float(self.discriminator(sr))
        sr = sr.float()
        terms = {
            "l1": losses.l1(sr, hr),
            "adversarial": losses.relativistic_generator_loss(real_logits, fake_logits),
            "feature_matching": losses.feature_matching(fake_features, real_features),
            "frequency": losses.radial_spectrum(sr, hr),
            "hf_energy": losses.pooled_high_frequency(sr, hr),
            "chroma": losses.chroma(sr, hr),
        }
        total = (
            terms["l1"]
            + c.adversarial_weight * terms["adversarial"]
            + c.feature_matching_weight * terms["feature_matching"]
            + c.frequency_weight * terms["frequency"]
            + c.hf_energy_weight * terms["hf_energy"]
            + c.chroma_weight * terms["chroma"]
        )
        self.optimizer.zero_grad(set_to_none=True)
        total.backward()
        self.optimizer.step()

        self.discriminator.requires_grad_(True)
        with self._networks():
            real_logits, _ = _float(self.discriminator(hr))
            fake_logits, _ = _float(self.discriminator(sr.detach()))
        d_loss = losses.relativistic_discriminator_loss(real_logits, fake_logits)
        self.d_optimizer.zero_grad(set_to_none=True)
        d_loss.backward()
        self.d_optimizer.step()
        return {name: value.item() for name, value in terms.items()} | {"generator": total.item(), "discriminator": d_loss.item()}


def _float(output: tuple[torch.Tensor, list[torch.Tensor]]) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """A discriminator's logits and features in float32, for the losses."""
    logits, features = output
    return logits.float(), [feature.float() for feature in features]
