"""The training run: data, split, model, optimisation with checkpoints, and the shipped artefacts.

A run lives in one directory: checkpoints and progress (resumed automatically when the same config
runs again), the loss/validation curves as PNG, and the final weights whose header carries the
measured effective radius and the model card.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from sr_geo.errors import InvalidRequestError
from sr_geo.inference import choose_device
from sr_geo.models.base import SRModel
from sr_geo.models.bicubic import Bicubic
from sr_geo.models.discriminator import PatchDiscriminator
from sr_geo.models.header import file_sha256, weights_metadata
from sr_geo.models.receptive import effective_radius
from sr_geo.models.registry import ARCHITECTURES
from sr_geo.models.temporal import MedianBicubic, SingleImageView
from sr_geo.models.weights import save_weights
from sr_geo.training.card import model_card
from sr_geo.training.checkpoint import Progress, load_checkpoint, save_checkpoint
from sr_geo.training.config import TrainConfig
from sr_geo.training.curves import plot_curves
from sr_geo.training.data import PatchSampler, ValidationPatch, degradation_margin
from sr_geo.training.schedule import learning_rate
from sr_geo.training.sources import Raster, load_rasters
from sr_geo.training.split import Split, split_rasters
from sr_geo.training.steps import Trainer
from sr_geo.training.temporal import TemporalSampler
from sr_geo.training.validation import evaluate


@dataclass(frozen=True)
class TrainResult:
    weights: Path
    curves: Path
    steps: int
    seconds: float
    validation: dict  # model and bicubic PSNR/SSIM on the held-out patches


def train(
    config: TrainConfig,
    run_dir: str | Path,
    *,
    weights_out: str | Path | None = None,
    device: str = "auto",
    command: str = "",
    progress_bar: bool = True,
) -> TrainResult:
    """Train (or resume) the run in `run_dir`; writes the final weights to `weights_out`
    (default `run_dir/{model}_x{scale}.safetensors`) and returns where everything went."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch_device = choose_device(device)
    config_record = json.loads(json.dumps(config.to_dict()))  # as it reads back: tuples become lists
    if config.init_weights:
        config_record["init_weights_sha256"] = file_sha256(config.init_weights)

    rasters = load_rasters(config.sources, config.stacks, config.scale)
    footprint = config.patch + 2 * degradation_margin(config.scale, config.degradation)
    split = split_rasters(rasters, footprint, config.split_cell, config.val_fraction, config.seed)
    if not any(len(c) for c in split.train):
        raise InvalidRequestError(
            f"no raster holds a valid {footprint} × {footprint} pixel training window outside the held-out cells"
        )
    temporal = ARCHITECTURES[config.model].temporal
    sampler = (TemporalSampler if temporal else PatchSampler)(rasters, split, config.scale, config.patch,
                                                              config.degradation, config.seed)
    val_patches = sampler.validation(split, config.val_patches)

    torch.manual_seed(config.seed)
    generator = ARCHITECTURES[config.model].load()(config.scale, **config.architecture_options())
    if config.init_weights:
        _initialise(generator, config.init_weights)
    # channels_last: ~25 % faster convolutions on CPU (oneDNN) and on GPU tensor cores alike.
    generator = generator.to(torch_device, memory_format=torch.channels_last)
    modules: dict[str, torch.nn.Module] = {"generator": generator}
    optimizers = {"generator": torch.optim.Adam(generator.parameters(), lr=config.lr)}
    if config.adversarial:
        modules["discriminator"] = PatchDiscriminator().to(torch_device)
        # β2 = 0.99 as in ESRGAN: the adversarial gradients drift, a shorter second-moment memory follows them.
        optimizers["discriminator"] = torch.optim.Adam(
            modules["discriminator"].parameters(), lr=config.gan_lr, betas=(0.9, 0.99)
        )
    trainer = Trainer(config, generator, optimizers["generator"], modules.get("discriminator"),
                      optimizers.get("discriminator"))
    averaged = None
    if config.ema_decay:
        averaged = AveragedModel(generator, multi_avg_fn=get_ema_multi_avg_fn(config.ema_decay), use_buffers=True)
        modules["ema"] = averaged
    shipped = averaged.module if averaged is not None else generator  # what is validated and written
    progress = load_checkpoint(run_dir, config_record, modules, optimizers)
    baseline_model = MedianBicubic(config.scale) if temporal else Bicubic(config.scale)
    baseline = evaluate(baseline_model, val_patches, torch_device) if val_patches else {}

    def checkpoint() -> None:
        save_checkpoint(run_dir, config_record, progress, modules, optimizers)

    generator.train()
    sums: dict[str, float] = {}  # loss terms summed over the `logged` steps since the last log entry
    logged = 0
    started, seconds_before = time.perf_counter(), progress.seconds
    bar = tqdm(total=config.steps, initial=progress.step, desc=f"{config.model} x{config.scale}",
               unit="step", dynamic_ncols=True, disable=not progress_bar)
    try:
        for step in range(progress.step, config.steps):
            batch = sampler.batch(step, config.batch_size)
            valid, shifts = (None if t is None else t.to(torch_device) for t in (batch.valid, batch.shifts))
            terms = trainer.step(step, batch.lr.to(torch_device), batch.hr.to(torch_device),
                                 learning_rate(config, step), valid, shifts)
            if averaged is not None:
                averaged.update_parameters(generator)
            for name, value in terms.items():
                sums[name] = sums.get(name, 0.0) + value
            logged += 1
            progress.step = step + 1
            progress.seconds = seconds_before + time.perf_counter() - started
            bar.update()
            if progress.step % config.log_every == 0 or progress.step == config.steps:
                means = {name: total / logged for name, total in sums.items()}
                progress.history.append({"kind": "train", "step": progress.step, "lr": learning_rate(config, step), **means})
                bar.set_postfix({name: f"{value:.4f}" for name, value in means.items()})
                sums, logged = {}, 0
            if val_patches and (progress.step % config.eval_every == 0 or progress.step == config.steps):
                scores = evaluate(shipped, val_patches, torch_device)
                progress.history.append({"kind": "val", "step": progress.step, **scores})
                bar.write(f"step {progress.step}: val PSNR {scores['psnr']:.2f} dB (bicubic {baseline['psnr']:.2f}), "
                          f"SSIM {scores['ssim']:.4f} (bicubic {baseline['ssim']:.4f}), "
                          f"HF energy SR/HR {scores['hf_ratio']:.3f}")
            if progress.step % config.checkpoint_every == 0:
                checkpoint()
    except KeyboardInterrupt:
        checkpoint()
        raise
    finally:
        bar.close()
    checkpoint()
    return _finish(config, run_dir, weights_out, shipped, rasters, split, val_patches, baseline, progress,
                   torch_device, command)


def _initialise(generator: SRModel, path: str) -> None:
    """Copy a weights file's tensors into `generator`, or into the part of it that is the file's
    architecture (the rnn's single-image CNN), refusing another architecture, scale or size.

    A file of an earlier version of the architecture, with the same sizes but without layers added since
    (the rnn's shift kernels), starts those layers at their initialisation: new layers are zero-initialised
    where they refine, so the network starts as the file's and training only adds what they bring.
    """
    metadata = weights_metadata(path)
    file_config = json.loads(metadata["config"])
    target = next((part for part in generator.modules()
                   if isinstance(part, SRModel) and part.arch == metadata["arch"]), None)
    if target is None or file_config.get("scale") != target.scale:
        raise InvalidRequestError(
            f"{path}: holds {metadata.get('arch')} ×{file_config.get('scale')}, not the {generator.arch} "
            f"×{generator.scale} being trained"
        )
    config = target.config()
    if any(config.get(key) != value for key, value in file_config.items()):
        raise InvalidRequestError(f"{path}: its layer sizes differ from the model being trained (--feats/--blocks)")
    try:
        unexpected = target.load_state_dict(load_file(path), strict=False).unexpected_keys
    except RuntimeError:
        unexpected = ["a tensor of another shape"]
    if unexpected:
        raise InvalidRequestError(f"{path}: its layer sizes differ from the model being trained (--feats/--blocks)")


def _finish(
    config: TrainConfig,
    run_dir: Path,
    weights_out: str | Path | None,
    generator: SRModel,
    rasters: list[Raster],
    split: Split,
    val_patches: list[ValidationPatch],
    baseline: dict,
    progress: Progress,
    device: torch.device,
    command: str,
) -> TrainResult:
    """Measure the effective radius, write weights with their card, and plot the curves."""
    generator.eval()
    generator.effective_radius = effective_radius(SingleImageView(generator) if generator.temporal else generator)
    latest = next((h for h in reversed(progress.history) if h["kind"] == "val"), None)
    validation = {
        "patches": len(val_patches),
        "split": f"by location: ground cells of {config.split_cell} patch footprints, {config.val_fraction:.0%} held out, "
        "guard band of one footprint",
        **({name: latest[name] for name in ("psnr", "ssim", "hf_ratio", "step") if name in latest} if latest else {}),
        **({"bicubic_psnr": baseline["psnr"], "bicubic_ssim": baseline["ssim"]} if baseline else {}),
        "units": "per band in standardised units, peak = band min-max over its raster; mean over bands, then patches",
    }
    used = [len(corners) > 0 for corners in split.train]
    card = model_card(config, rasters, used, validation, progress.step, progress.seconds, device, command)
    if generator.temporal:
        card["temporal_synthesis"] = TemporalSampler.synthesis.card()
    weights = Path(weights_out) if weights_out else run_dir / f"{config.model}_x{config.scale}.safetensors"
    weights.parent.mkdir(parents=True, exist_ok=True)
    save_weights(generator.cpu(), weights, **card)
    curves = plot_curves(progress.history, baseline, run_dir / "curves.png", f"{config.model} ×{config.scale}")
    return TrainResult(weights, curves, progress.step, progress.seconds, validation)

