"""`sr-geo archive SRC -o DEST`: super-resolve every raster of a folder, a glob or a STAC JSON."""

from __future__ import annotations

import sys
from dataclasses import asdict

import click

from flows.cli.options import check_inference, pipeline_options, resolve_settings
from sr_geo.catalog import check_source
from sr_geo.models.registry import ModelSpec, check_weights


@click.command("archive")
@click.argument("source")
@click.option("-o", "--output", "destination", required=True,
              help="Output folder or object-store prefix (s3://bucket/prefix); mirrors SOURCE's layout and holds "
                   "the COGs, item-collection.json and .sr-geo/.")
@click.option("--asset", help="STAC asset key to process [default: every raster data asset of each item].")
@click.option("--scenes-in-flight", type=click.IntRange(1, 1024), help="Outputs made at once [default: 2].")
@click.option("--retries", "scene_retries", type=click.IntRange(0, 100),
              help="Reruns of a failed output, unless its input is at fault [default: 1].")
@pipeline_options
def command(source: str, destination: str, asset: str | None, **options) -> None:
    """Super-resolve every raster in SOURCE (folder, glob or STAC JSON) into COGs under DEST.

    Outputs already current (same input content, model, weights and run options) are skipped, so
    rerunning the same command finishes or updates an archive. With a temporal model (rnn) each time
    stack (several dates on one grid) becomes one output. Exits 1 if any output failed.
    """
    config = resolve_settings(options)
    check_inference(options)
    check_weights(ModelSpec(options["model"], options["scale"], options["weights"]), bands=1)
    check_source(source, destination)
    from flows.startup import run_services  # Prefect and Ray load once the request is valid

    with run_services(config.ray_address, config.prefect_api_url, preload="flows.archive"):
        from flows.archive import super_resolve_archive

        summary = super_resolve_archive(source, destination, asset=asset, **options, **asdict(config))
    _print_summary(summary)
    if summary["failed"]:
        sys.exit(1)


def _print_summary(summary: dict) -> None:
    counts, groups = summary["counts"], summary["groups"]
    stacks = sum(g["kind"] == "stack" for g in groups)
    how = "each fused into one output" if summary["stacks_fused"] else "each date made on its own"
    click.echo(f"archive {summary['source']} -> {summary['destination']}: {counts['done']} done, "
               f"{counts['skipped']} skipped, {counts['failed']} failed; {len(groups)} groups "
               f"({stacks} time stacks, {how})")
    for row in summary["scenes"]:
        frames = f", {row['frames']} frames" if row["frames"] > 1 else ""
        click.echo(f"  {row['status']:<8} {row['seconds']:7.1f} s  {row['scene']}  ({row['reason']}{frames})")
    if summary["ignored"]:
        click.echo(f"ignored {len(summary['ignored'])} files without a raster suffix")
    click.echo(f"items: {summary['item_collection']}")
