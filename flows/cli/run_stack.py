"""`sr-geo run-stack A.tif B.tif ... -o OUT`: super-resolve a time series of one place into one COG."""

from __future__ import annotations

from dataclasses import asdict

import click

from flows.cli.options import check_inference, pipeline_options, print_summary, resolve_settings, stack_options
from sr_geo.models.registry import ModelSpec
from sr_geo.stack import CloudMask, parse_mask_values, validate_stack_request


@click.command("run-stack")
@click.argument("frames", nargs=-1, required=True)
@click.option("-o", "--output", "destination", required=True, help="Output COG path.")
@stack_options
@click.option("--quicklook", type=click.Path(dir_okay=False), help="Also write a before/after PNG here.")
@pipeline_options
def command(frames: tuple[str, ...], destination: str, reference: str | None, mask_source: str | None,
            mask_values: str, asset: str | None, quicklook: str | None, **options) -> None:
    """Super-resolve the FRAMES of one place (files, globs, folders or a STAC ItemCollection JSON) into one
    Cloud Optimized GeoTIFF on the reference frame's grid. Frames are co-registered onto that grid and
    ordered by acquisition date; temporal models (rnn) fuse them all, single-image models use the clearest."""
    config = resolve_settings(options)
    check_inference(options)
    values = parse_mask_values(mask_values)
    mask = CloudMask(mask_source, values) if mask_source else None
    validate_stack_request(frames, destination, ModelSpec(options["model"], options["scale"], options["weights"]),
                           reference=reference, mask=mask, asset=asset)
    from flows.startup import run_services  # Prefect and Ray load only once the request is valid

    with run_services(config.ray_address, config.prefect_api_url, preload="flows.timeseries"):
        from flows.timeseries import super_resolve_timeseries

        summary = super_resolve_timeseries(list(frames), destination, quicklook=quicklook, reference=reference,
                                           mask=mask_source, mask_values=values, asset=asset, **options,
                                           **asdict(config))
    for i, frame in enumerate(summary["frames"]):
        marker = " (reference)" if i == summary["reference"] else ""
        click.echo(f"frame {i + 1}: {frame['acquired'] or 'no date'} {frame['path']} [{frame['read']}]{marker}")
    print_summary(summary)


# The shared options default to the single-image CNN; a stack's natural model is the temporal one.
next(p for p in command.params if p.name == "model").default = "rnn"

