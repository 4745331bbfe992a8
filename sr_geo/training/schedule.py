"""Learning rate per step, a pure function of the step so a resumed run needs no scheduler state.

Each phase (the whole run; for the GAN, L1 pretraining then adversarial fine-tuning) decays on a
cosine from its base rate to 5 % of it. The first phase warms up linearly over its first 5 % of
steps (at most 100): Adam's early steps are noisy, and the zero-initialised tail makes the first
updates decide what the whole network learns.
"""

from __future__ import annotations

import math

from sr_geo.training.config import TrainConfig

FLOOR = 0.05


def learning_rate(config: TrainConfig, step: int) -> float:
    if config.adversarial and step >= config.pretrain_steps:
        start, length, base, warmup = config.pretrain_steps, config.steps - config.pretrain_steps, config.gan_lr, 0
    else:
        length = config.pretrain_steps if config.adversarial else config.steps
        start, base, warmup = 0, config.lr, min(100, length // 20)
    t = (step - start) / max(1, length)
    rate = base * (FLOOR + (1 - FLOOR) * 0.5 * (1 + math.cos(math.pi * t)))
    return rate * min(1.0, (step - start + 1) / warmup) if warmup else rate
