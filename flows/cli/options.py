"""Options shared by the subcommands that run the pipeline, and how their settings are resolved."""

from __future__ import annotations

import click

from sr_geo.config import COMPRESSIONS, FIELDS, PRECISIONS, Config, load_config
from sr_geo.models.registry import ARCHITECTURES, SCALES
from sr_geo.preflight import check_inference_flags
from sr_geo.stack import SCL_INVALID


def pipeline_options(fn):
    """What to make (--model, --scale, --weights, --tile, --halo, --device, --keep-store, --uncertainty,
    --consistent, --sensor-mtf) and the settings of where and how fast (--config and one flag per setting)."""
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
        click.option("--device", default="auto", show_default=True, type=click.Choice(["auto", "cpu", "cuda"]),
                     help="Where models run; auto uses GPUs when Ray sees them."),
        click.option("--keep-store", is_flag=True, help="Keep the Zarr store after a successful run."),
        click.option("--uncertainty", is_flag=True,
                     help="Also write OUT_uncertainty.tif: per-pixel spread under flips and rotations."),
        click.option("--consistent", is_flag=True,
                     help="Back-project the output so it reproduces the input under the sensor model "
                          "(a stack: every frame at its shift, in least squares)."),
        click.option("--sensor-mtf", type=click.FloatRange(0, 1, min_open=True, max_open=True),
                     help="The input sensor's MTF at its Nyquist frequency, which --consistent assumes [default: 0.3]."),
        # Settings (sr_geo.config): a flag given overrides $SR_GEO_<NAME>, which overrides the --config file.
        click.option("--config", "config_file", type=click.Path(dir_okay=False),
                     help="TOML settings file [default: $SR_GEO_CONFIG]; see the README's Configuration."),
        click.option("--batch-size", type=click.IntRange(1, 1024),
                     help="Tiles per model call, fewer where a tile's memory needs it [default: 4]."),
        click.option("--actors", type=click.IntRange(1), help="Predictor actors [default: one per GPU, else per node]."),
        click.option("--threads", type=click.IntRange(1),
                     help="CPU threads per actor [default: the cluster's CPUs shared between the actors]."),
        click.option("--gpus-per-actor", type=click.FloatRange(0), help="GPU share per actor, e.g. 0.5 [default: 1]."),
        click.option("--compression", type=click.Choice(COMPRESSIONS),
                     help="The output COG's codec: zstd writes 1.7× faster, deflate opens everywhere [default: deflate]."),
        click.option("--precision", type=click.Choice(PRECISIONS),
                     help="The network's arithmetic: bfloat16 ran the CNN 1.8× faster on a CPU with AMX, outputs "
                          "within about 0.01 std of float32 [default: auto, bfloat16 on GPUs, float32 on CPUs]."),
        click.option("--workdir", help="Where run stores live (path or URL) [default: beside the output]."),
        click.option("--ray-address", help="Ray cluster to use [default: $RAY_ADDRESS, else a private local one]."),
        click.option("--prefect-api-url", help="Prefect server to report to [default: $PREFECT_API_URL, else ephemeral]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def stack_options(fn):
    """How a time stack is read (--reference, --mask, --mask-values, --asset): run-stack and inspect alike."""
    options = [
        click.option("--reference", help="The frame whose grid, bands and nodata the output takes [default: the first given]."),
        click.option("--mask", "mask_source", metavar="TEMPLATE|asset:KEY",
                     help="Per-frame cloud/QA mask raster, e.g. '{dir}/{stem}_SCL.tif' ({dir}, {stem}: the frame's "
                          "folder and file name without extension), or asset:SCL for STAC items."),
        click.option("--mask-values", default=",".join(map(str, SCL_INVALID)), show_default=True, metavar="V1,V2,...",
                     help="Mask values that make a pixel invalid; the default is the Sentinel-2 SCL classes no data, "
                          "defective, cloud shadow, medium and high probability cloud, and cirrus."),
        click.option("--asset", help="STAC asset key holding each item's image [default: every raster data asset]."),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def check_inference(options: dict) -> None:
    """Refuse inference flags the model cannot honour before any service starts (the flows check again)."""
    check_inference_flags(options["uncertainty"], options["consistent"], ARCHITECTURES[options["model"]].temporal,
                          options["model"], options["sensor_mtf"])


def resolve_settings(options: dict) -> Config:
    """Take --config and the setting flags out of a command's `options` and resolve the settings with the
    flags given on top."""
    file = options.pop("config_file")
    flags = {name: options.pop(name) for name in FIELDS if name in options}
    return load_config(file, **{name: value for name, value in flags.items() if value is not None})


def print_summary(summary: dict) -> None:
    from flows.stages import describe_pool

    check = summary["consistency"]
    psnr = ", ".join(f"{p:.1f}" for p in check["psnr"])
    click.echo(
        f"wrote {summary['destination']}: {summary['tiles']} tiles ({summary['tiles_inferred']} inferred now), "
        f"{summary['megapixels_per_second']:.2f} MP/s; consistency PSNR [{psnr}] dB, "
        f"shift ({check['shift_y']:+.3f}, {check['shift_x']:+.3f}) px"
    )
    click.echo(f"inference: {describe_pool(summary['pool'], summary['hardware'])}")
