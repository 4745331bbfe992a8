"""`sr-geo train SOURCES... --model cnn --scale 4 -o RUN_DIR`: self-supervised training of a model."""

from __future__ import annotations

import dataclasses
import shlex
import shutil
import sys
from pathlib import Path

import click

from sr_geo.models.registry import ARCHITECTURES, CLASSICAL, SCALES
from sr_geo.training.config import PRECISIONS, TrainConfig

LEARNED = sorted(set(ARCHITECTURES) - set(CLASSICAL))
_DEFAULTS = {f.name: f.default for f in dataclasses.fields(TrainConfig)}


@click.command("train")
@click.argument("sources", nargs=-1)
@click.option("--stack", "stacks", multiple=True,
              help="Glob whose files are stacked as the bands of one raster (repeatable).")
@click.option("-o", "--run-dir", required=True, type=click.Path(file_okay=False),
              help="Checkpoints, curves and weights; rerunning the same command resumes from here.")
@click.option("--weights-out", type=click.Path(dir_okay=False),
              help="Final weights file [default: RUN_DIR/{model}_x{scale}.safetensors].")
@click.option("--model", default="cnn", show_default=True, type=click.Choice(LEARNED))
@click.option("--scale", default="4", show_default=True, type=click.Choice([str(s) for s in SCALES]),
              callback=lambda _c, _p, v: int(v))
@click.option("--steps", default=_DEFAULTS["steps"], show_default=True, type=click.IntRange(1))
@click.option("--pretrain-steps", default=0, show_default=True, type=click.IntRange(0),
              help="GAN: steps of L1-only generator training before the adversarial phase.")
@click.option("--batch-size", default=_DEFAULTS["batch_size"], show_default=True, type=click.IntRange(1))
@click.option("--patch", default=_DEFAULTS["patch"], show_default=True, type=click.IntRange(8),
              help="HR patch side in pixels.")
@click.option("--lr", default=_DEFAULTS["lr"], show_default=True, type=float)
@click.option("--feats", default=_DEFAULTS["feats"], show_default=True, type=click.IntRange(1))
@click.option("--blocks", type=click.IntRange(1), help="Residual blocks [default: the architecture's].")
@click.option("--seed", default=_DEFAULTS["seed"], show_default=True, type=int)
@click.option("--val-patches", default=_DEFAULTS["val_patches"], show_default=True, type=click.IntRange(0))
@click.option("--eval-every", default=_DEFAULTS["eval_every"], show_default=True, type=click.IntRange(1))
@click.option("--init-weights", type=click.Path(exists=True, dir_okay=False), callback=lambda _c, _p, v: v or "",
              help="Start the generator from this weights file (same architecture and scale): fine-tuning. "
                   "For rnn, a cnn file of the same scale starts its single-image base.")
@click.option("--adversarial-weight", default=_DEFAULTS["adversarial_weight"], show_default=True, type=float,
              help="GAN: weight of the relativistic adversarial term.")
@click.option("--frequency-weight", default=_DEFAULTS["frequency_weight"], show_default=True, type=float,
              help="GAN: weight of the radial power-spectrum term.")
@click.option("--hf-energy-weight", default=_DEFAULTS["hf_energy_weight"], show_default=True, type=float,
              help="GAN: weight of the batch's energy above half Nyquist against the HR's.")
@click.option("--chroma-weight", default=_DEFAULTS["chroma_weight"], show_default=True, type=float,
              help="GAN: weight of the bands' deviations from their mean against the HR's (less colour grain).")
@click.option("--ema-decay", default=_DEFAULTS["ema_decay"], show_default=True, type=click.FloatRange(0, 1, max_open=True),
              help="Ship (and validate) a moving average of the generator's weights with this decay per step; "
                   "0: the last step's.")
@click.option("--attribution", default="", help="Data attribution to record in the weights' model card.")
@click.option("--precision", default=_DEFAULTS["precision"], show_default=True,
              type=click.Choice(PRECISIONS),
              help="The networks' arithmetic: bfloat16 autocast (float32 weights), faster on GPUs and CPUs with AMX.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--threads", type=click.IntRange(1), help="CPU threads for torch [default: torch's choice].")
@click.option("--fresh", is_flag=True, help="Discard RUN_DIR's checkpoints and start over.")
def command(sources: tuple[str, ...], stacks: tuple[str, ...], run_dir: str, weights_out: str | None,
            device: str, threads: int | None, fresh: bool, **options) -> None:
    """Train a model on rasters degraded by the sensor model (files, folders or globs; PATTERN@B02,B03
    keeps those bands). The validation split is by location; rerun the same command to resume."""
    import torch

    from sr_geo.hardware import device_description, emulated_bfloat16
    from sr_geo.inference import choose_device
    from sr_geo.training.loop import train

    if threads:
        torch.set_num_threads(threads)
    try:
        config = TrainConfig(sources=sources, stacks=stacks, **options)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    hardware = device_description(choose_device(device))
    if emulated_bfloat16(config.precision, [hardware]):
        click.echo(f"sr-geo: warning: bfloat16 is emulated on {hardware}, several times slower than "
                   "float32 (--precision float32)", err=True)
    if fresh:
        shutil.rmtree(run_dir, ignore_errors=True)
    result = train(config, run_dir, weights_out=weights_out, device=device,
                   command=shlex.join(["sr-geo", *sys.argv[1:]]))
    v = result.validation
    click.echo(f"wrote {result.weights} after {result.steps} steps ({result.seconds / 60:.1f} min); "
               f"curves {result.curves}")
    if "psnr" in v:
        click.echo(f"validation on {v['patches']} held-out patches: PSNR {v['psnr']:.2f} dB "
                   f"(bicubic {v['bicubic_psnr']:.2f}), SSIM {v['ssim']:.4f} (bicubic {v['bicubic_ssim']:.4f})")
    click.echo(f"receptive radius: {_radii(result.weights)}")


def _radii(weights: Path) -> str:
    from sr_geo.models.header import read_metadata

    meta = read_metadata(weights)
    return f"{meta['effective_radius']} px, theoretical {meta['theoretical_radius']} px"
