"""`sr-geo archive SRC -o DEST`: super-resolve every raster of a folder, a glob or a STAC JSON."""

from __future__ import annotations

import sys

import click
from click.core import ParameterSource

from flows.cli.options import pipeline_options
from sr_geo.catalog import check_source
from sr_geo.config import load_config
from sr_geo.models.registry import ModelSpec, build_model

# Settings (sr_geo.config) that flags can override; a flag left at its default does not override.
SETTINGS = ("batch_size", "workdir", "ray_address", "scenes_in_flight", "scene_retries", "prefect_api_url")


@click.command("archive")
@click.argument("source")
@click.option("-o", "--output", "destination", required=True, type=click.Path(file_okay=False),
              help="Output folder; mirrors SOURCE's layout, holds the COGs, item-collection.json and .sr-geo/.")
@click.option("--asset", help="STAC asset key to process [default: every raster data asset of each item].")
@click.option("--scenes-in-flight", type=click.IntRange(1, 1024),
              help="Scenes processed at once [default: 2, or the configuration].")
@click.option("--retries", "scene_retries", type=click.IntRange(0, 100),
              help="Reruns of a failed scene, unless its input is at fault [default: 1, or the configuration].")
@click.option("--prefect-api-url", help="Prefect server to report to [default: $PREFECT_API_URL, else ephemeral].")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), envvar="SR_GEO_CONFIG",
              help="TOML settings file (see docs/operations.md); flags override it, SR_GEO_* variables too.")
@pipeline_options
def command(source: str, destination: str, asset: str | None, config_file: str | None, **options) -> None:
    """Super-resolve every raster in SOURCE (folder, glob or STAC JSON) into COGs under DEST.

    Outputs already current (same input content, model, weights and run options) are skipped, so
    rerunning the same command finishes or updates an archive. Exits 1 if any scene failed.
    """
    context = click.get_current_context()
    flags = {name: options.pop(name) for name in SETTINGS}
    config = load_config(config_file, **{name: value for name, value in flags.items()
                                         if context.get_parameter_source(name) is ParameterSource.COMMANDLINE})
    build_model(ModelSpec(options["model"], options["scale"], options["weights"]), bands=1)
    check_source(source, destination)
    from flows.archive import super_resolve_archive, using_prefect_api  # Prefect and Ray load once it is valid

    with using_prefect_api(config.prefect_api_url):
        summary = super_resolve_archive(
            source, destination, asset=asset, **options, batch_size=config.batch_size, workdir=config.workdir,
            ray_address=config.ray_address, scenes_in_flight=config.scenes_in_flight,
            scene_retries=config.scene_retries,
        )
    _print_summary(summary)
    if summary["failed"]:
        sys.exit(1)


def _print_summary(summary: dict) -> None:
    counts, groups = summary["counts"], summary["groups"]
    stacks = [g for g in groups if g["kind"] == "stack"]
    click.echo(f"archive {summary['source']} -> {summary['destination']}: {counts['done']} done, "
               f"{counts['skipped']} skipped, {counts['failed']} failed; {len(groups)} groups "
               f"({len(stacks)} time stacks, each scene of a stack run on its own)")
    for row in summary["scenes"]:
        click.echo(f"  {row['status']:<8} {row['seconds']:7.1f} s  {row['scene']}  ({row['reason']})")
    if summary["ignored"]:
        click.echo(f"ignored {len(summary['ignored'])} files without a raster suffix")
    click.echo(f"items: {summary['item_collection']}")
