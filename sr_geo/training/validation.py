"""Validation metrics on the held-out patches: the model against bicubic, per patch then averaged.

PSNR and SSIM are computed per band (sr_geo.metrics) in standardised units with each band's
min-max range over its raster as the peak, averaged over bands, then over patches, as SR papers
report them. `hf_ratio` is the held-out patches' share of spectral energy above half Nyquist, the
model's over the HR's (pooled over patches, so near-flat patches cannot dominate): the number a
GAN's adversarial phase is meant to raise towards 1 while PSNR holds. The numbers are what the pipeline delivers, because the model runs through the same
forward pass as inference.
"""

from __future__ import annotations

import numpy as np
import torch

from sr_geo.inference import forward
from sr_geo.metrics import high_frequency_energy, psnr, ssim
from sr_geo.models.base import SRModel
from sr_geo.training.data import ValidationPatch


def evaluate(model: SRModel, patches: list[ValidationPatch], device: torch.device) -> dict:
    was_training = model.training
    model.eval()
    scores = {"psnr": [], "ssim": []}
    hf_sr, hf_hr = [], []
    for patch in patches:
        valid, shifts = (None if t is None else t.numpy() for t in (patch.valid, patch.shifts))
        sr = forward(model, patch.lr.numpy(), device, valid, shifts)[0]
        hr = patch.hr[0].numpy()
        scores["psnr"].append(float(np.mean(psnr(sr, hr, patch.data_range))))
        scores["ssim"].append(float(np.mean(ssim(sr, hr, patch.data_range))))
        hf_sr.append(high_frequency_energy(sr))
        hf_hr.append(high_frequency_energy(hr))
    model.train(was_training)
    means = {name: float(np.mean(values)) for name, values in scores.items()}
    return means | {"hf_ratio": float(np.sum(hf_sr) / max(np.sum(hf_hr), 1e-12)), "patches": len(patches)}
