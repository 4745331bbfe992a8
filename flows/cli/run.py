"""`sr-geo run SCENE -o OUT`: super-resolve one raster into a COG."""

from __future__ import annotations

from dataclasses import asdict

import click

from flows.cli.options import check_inference, pipeline_options, print_summary, resolve_settings
from sr_geo.models.registry import ModelSpec
from sr_geo.preflight import validate_request
from sr_geo.storage import output_lock


@click.command("run")
@click.argument("source")
@click.option("-o", "--output", "destination", required=True, help="Output COG path.")
@click.option("--quicklook", type=click.Path(dir_okay=False), help="Also write a before/after PNG here.")
@pipeline_options
def command(source: str, destination: str, quicklook: str | None, **options) -> None:
    """Super-resolve SOURCE (any raster GDAL reads) into a Cloud Optimized GeoTIFF."""
    config = resolve_settings(options)
    check_inference(options)
    validate_request(source, destination, ModelSpec(options["model"], options["scale"], options["weights"]))
    from flows.startup import run_services  # Prefect and Ray load only once the request is valid

    with output_lock(destination), run_services(config.ray_address, config.prefect_api_url, preload="flows.scene"):
        from flows.scene import super_resolve_scene

        print_summary(super_resolve_scene(source, destination, quicklook=quicklook, **options, **asdict(config)))
