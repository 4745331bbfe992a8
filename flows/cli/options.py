"""Options shared by the subcommands that run the pipeline."""

from __future__ import annotations

import click

from sr_geo.models.registry import ARCHITECTURES, SCALES


def pipeline_options(fn):
    """--model, --scale, --weights, --tile, --halo, --batch-size, --workdir, --device, --ray-address."""
    options = [
        click.option("--model", default="cnn", show_default=True, type=click.Choice(sorted(ARCHITECTURES)),
                     help="Model to run; bicubic is the classical baseline."),
        click.option("--scale", default=4, show_default=True, type=click.Choice([str(s) for s in SCALES]),
                     callback=lambda _c, _p, v: int(v), help="Upscaling factor."),
        click.option("--weights", type=click.Path(dir_okay=False), help="Safetensors weights instead of the shipped ones."),
        click.option("--tile", default=256, show_default=True, type=click.IntRange(8, 4096),
                     help="Tile core size in input pixels."),
        click.option("--halo", type=click.IntRange(0, 1024),
                     help="Overlap in input pixels [default: the model's receptive radius]."),
        click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1, 1024),
                     help="Tiles per model call."),
        click.option("--workdir", type=click.Path(file_okay=False),
                     help="Where the run's Zarr store lives [default: .sr-geo-work beside the output]."),
        click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                     help="Where models run; auto uses GPUs when Ray sees them."),
        click.option("--ray-address", envvar="RAY_ADDRESS", help="Ray cluster to use [default: a local one]."),
        click.option("--keep-store", is_flag=True, help="Keep the Zarr store after a successful run."),
        click.option("--uncertainty", is_flag=True,
                     help="Also write OUT_uncertainty.tif: per-pixel spread under flips and rotations."),
        click.option("--consistent", is_flag=True,
                     help="Back-project the output so it reproduces the input under the sensor model."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def print_summary(summary: dict) -> None:
    check = summary["consistency"]
    psnr = ", ".join(f"{p:.1f}" for p in check["psnr"])
    click.echo(
        f"wrote {summary['destination']}: {summary['tiles']} tiles ({summary['tiles_inferred']} inferred now), "
        f"{summary['megapixels_per_second']:.2f} MP/s; consistency PSNR [{psnr}] dB, "
        f"shift ({check['shift_y']:+.3f}, {check['shift_x']:+.3f}) px"
    )
