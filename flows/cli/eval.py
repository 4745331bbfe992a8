"""`sr-geo eval HR... -o OUT`: score models on held-out HR rasters through the real pipeline;
`--stack`: score temporal models on synthetic time series of them (K = 1, 2, 4, 8 frames)."""

from __future__ import annotations

import glob
from pathlib import Path

import click

from sr_geo.config import PRECISIONS
from sr_geo.errors import InvalidRequestError
from sr_geo.evaluation import STACK_FRAMES, EvalConfig, StackEvalConfig, validate_eval_request
from sr_geo.models.registry import SCALES
from sr_geo.preflight import check_sensor_mtf


@click.command("eval")
@click.argument("hr_rasters", nargs=-1, required=True)
@click.option("--models", help="Comma-separated models; the bicubic and lanczos baselines always run "
              "[default: bicubic,lanczos; with --stack: rnn,cnn].")
@click.option("--stack", is_flag=True,
              help="Evaluate on synthetic time series (jittered, cloud-masked frames): temporal models on K frames, "
                   "single-image models on the clearest, bicubic of the median.")
@click.option("--consistent", is_flag=True,
              help="Run the models (not the baselines) with --consistent: back-projected onto their input (with "
                   "--stack, a temporal model onto every frame) under the sensor model.")
@click.option("--sensor-mtf", type=click.FloatRange(0, 1, min_open=True, max_open=True),
              help="With --consistent: the MTF at Nyquist that back-projection assumes [default: 0.3].")
@click.option("--frames", "frame_counts", default=",".join(map(str, STACK_FRAMES)), show_default=True,
              help="With --stack: the frame counts K to compare.")
@click.option("--scale", default="4", show_default=True, type=click.Choice([str(s) for s in SCALES]),
              callback=lambda _c, _p, v: int(v), help="Upscaling factor.")
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Where the table, CSV, picture grid, inputs and outputs go.")
@click.option("--crop", type=click.IntRange(32), help="Evaluate the central N×N HR pixels of each raster.")
@click.option("--weights", "weight_args", multiple=True, metavar="MODEL=FILE",
              help="Weights for a model instead of the shipped ones (repeatable).")
@click.option("--rgb", metavar="R,G,B",
              help="Bands shown as RGB in the picture grid where a raster does not mark red, green, blue.")
@click.option("--keep-zeros", is_flag=True,
              help="Treat all-bands-zero pixels as data in rasters without nodata or mask (default: fill).")
@click.option("--tile", default=256, show_default=True, type=click.IntRange(8, 4096), help="Tile core size (LR px).")
@click.option("--batch-size", default=4, show_default=True, type=click.IntRange(1, 1024), help="Tiles per model call.")
@click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--precision", default="auto", show_default=True, type=click.Choice(PRECISIONS),
              help="The network's arithmetic (see `sr-geo run --help`).")
@click.option("--ray-address", envvar="RAY_ADDRESS", help="Ray cluster to use [default: a local one].")
def command(hr_rasters: tuple[str, ...], models: str | None, stack: bool, consistent: bool,
            sensor_mtf: float | None, frame_counts: str, scale: int,
            output_dir: str, crop: int | None, weight_args: tuple[str, ...], rgb: str | None, keep_zeros: bool,
            tile: int, batch_size: int, device: str, precision: str, ray_address: str | None) -> None:
    """Degrade each HR raster (files or globs) with the documented sensor model, super-resolve it with
    every model, and write eval_x<scale>.md/.csv and a picture grid to the output directory (with --stack:
    eval_stack_x<scale>.md/.csv)."""
    check_sensor_mtf(consistent, sensor_mtf)
    sources = _expand(hr_rasters)
    models = models or ("rnn,cnn" if stack else "bicubic,lanczos")
    names = [m.strip() for m in models.split(",") if m.strip()]
    weights = dict(_pair(arg) for arg in weight_args)
    config = EvalConfig(scale=scale, crop=crop, zero_fill=not keep_zeros, rgb=_bands(rgb) if rgb else None)
    validate_eval_request(sources, names, config, weights, output_dir)
    from flows.startup import run_services  # Prefect and Ray load only once the request is valid

    if stack:
        counts = _counts(frame_counts)
        StackEvalConfig(scale=scale, frames=counts, crop=crop, zero_fill=not keep_zeros)  # refuse bad counts now
        with run_services(ray_address, None, preload="flows.evaluate"):
            from flows.evaluate import evaluate_stacks

            result = evaluate_stacks(sources, names, scale, output_dir, frames=counts, crop=crop, weights=weights,
                                     zero_fill=not keep_zeros, tile=tile, batch_size=batch_size, device=device,
                                     precision=precision, ray_address=ray_address, consistent=consistent,
                                     sensor_mtf=sensor_mtf)
        click.echo(Path(result["table"]).read_text())
        click.echo(f"wrote {result['table']}, {result['csv']}")
        return
    with run_services(ray_address, None, preload="flows.evaluate"):
        from flows.evaluate import evaluate_models

        result = evaluate_models(sources, names, scale, output_dir, crop=crop, weights=weights,
                                 zero_fill=not keep_zeros, rgb=config.rgb, tile=tile, batch_size=batch_size,
                                 device=device, precision=precision, ray_address=ray_address, consistent=consistent,
                                 sensor_mtf=sensor_mtf)
    click.echo(Path(result["table"]).read_text())
    click.echo(f"wrote {result['table']}, {result['csv']}, {result['grid']}")


def _expand(patterns: tuple[str, ...]) -> list[str]:
    paths: list[str] = []
    for pattern in patterns:
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else [pattern]
        if not matches:
            raise InvalidRequestError(f"{pattern}: matches no file")
        paths += [m for m in matches if m not in paths]
    return paths


def _counts(arg: str) -> tuple[int, ...]:
    try:
        return tuple(int(k) for k in arg.split(","))
    except ValueError:
        raise InvalidRequestError(f"--frames {arg}: expected frame counts, e.g. --frames 1,2,4,8") from None


def _pair(arg: str) -> tuple[str, str]:
    model, sep, path = arg.partition("=")
    if not sep or not model or not path:
        raise InvalidRequestError(f"--weights {arg}: expected MODEL=FILE, e.g. --weights cnn=cnn_x4.safetensors")
    return model, path


def _bands(arg: str) -> tuple[int, int, int]:
    try:
        bands = tuple(int(b) for b in arg.split(","))
    except ValueError:
        bands = ()
    if len(bands) != 3:
        raise InvalidRequestError(f"--rgb {arg}: expected three band numbers, e.g. --rgb 3,2,1")
    return bands
