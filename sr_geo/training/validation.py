"""Validation metrics on the held-out patches: the model against bicubic, per patch then averaged.

PSNR and SSIM are computed per band (sr_geo.metrics) in standardised units with each band's
min-max range over its raster as the peak, averaged over bands, then over patches, as SR papers
report them. The numbers are what the pipeline delivers, because the model runs through the same
forward pass as inference.
"""

from __future__ import annotations

import numpy as np
import torch

from sr_geo.inference import forward
from sr_geo.metrics import psnr, ssim
from sr_geo.models.base import SRModel
from sr_geo.training.data import ValidationPatch


def evaluate(model: SRModel, patches: list[ValidationPatch], device: torch.device) -> dict:
    was_training = model.training
    model.eval()
    scores = {"psnr": [], "ssim": []}
    for patch in patches:
        sr = forward(model, patch.lr.numpy(), device, None if patch.valid is None else patch.valid.numpy())[0]
        hr = patch.hr[0].numpy()
        scores["psnr"].append(float(np.mean(psnr(sr, hr, patch.data_range))))
        scores["ssim"].append(float(np.mean(ssim(sr, hr, patch.data_range))))
    model.train(was_training)
    return {name: float(np.mean(values)) for name, values in scores.items()} | {"patches": len(patches)}
