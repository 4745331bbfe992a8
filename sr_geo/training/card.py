"""The model card fields written into a trained model's safetensors header.

A weights file must say on its own how it was made: the architecture and scale are in the header
already (sr_geo.models.weights); these fields add the bands and data it was trained on, the sensor
model that made its LR inputs, how long and where it trained, and its validation scores.
"""

from __future__ import annotations

import torch

from sr_geo.hardware import cpu_description
from sr_geo.training.config import TrainConfig
from sr_geo.training.sources import Raster


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return f"GPU {torch.cuda.get_device_name(device)}"
    threads = torch.get_num_threads()
    return f"CPU {cpu_description()}, {threads} torch thread{'s' if threads > 1 else ''}, no GPU"


def model_card(
    config: TrainConfig,
    rasters: list[Raster],
    used: list[bool],
    validation: dict,
    steps: int,
    seconds: float,
    device: torch.device,
    command: str,
) -> dict:
    """JSON-serialisable card fields; `used` marks the rasters big enough to give training windows."""
    sources: dict[str, dict] = {}
    for raster, trained in zip(rasters, used, strict=True):
        entry = sources.setdefault(raster.source, {"rasters": 0, "skipped_too_small": 0, "bands": []})
        entry["rasters" if trained else "skipped_too_small"] += 1
        entry["bands"] = sorted(set(entry["bands"]) | set(raster.band_names))
    d = config.degradation
    return {
        "bands_trained": sorted({b for r, u in zip(rasters, used, strict=True) if u for b in r.band_names}),
        "band_agnostic": "shared per-band trunk with band-mean exchange; trained on random subsets of 1.."
        f"{max(r.bands for r in rasters)} bands in random order; runs on any band count",
        "training_data": {"sources": sources, "attribution": config.attribution},
        "degradation": {
            "model": "sr_geo.degrade.SensorModel: Gaussian PSF set by the MTF at LR Nyquist, "
            "area (block-mean) downsampling, additive white Gaussian noise",
            "mtf_nyquist": list(d.mtf_nyquist),
            "noise_std_standardised": list(d.noise_std),
            "sampling": "uniform within the ranges, independently per patch",
        },
        "training": {
            "steps": steps,
            "pretrain_steps_l1": config.pretrain_steps if config.adversarial else steps,
            "batch_size": config.batch_size,
            "hr_patch": config.patch,
            "seed": config.seed,
            "precision": config.precision,
            "ema_decay": config.ema_decay,
            "seconds": round(seconds, 1),
            "hardware": hardware(device),
            "command": command,
        },
        "validation": validation,
    }
