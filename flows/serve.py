"""`python -m flows.serve`: serve the archive and scene flows as scheduled deployments from this process.

For one machine without a work pool: this process polls the Prefect server (PREFECT_API_URL, or
prefect_api_url in the settings) and runs each due flow run in a subprocess that inherits its
environment, so SR_GEO_* settings and RAY_ADDRESS apply to scheduled runs too.

Every option can also be given as SR_GEO_SERVE_<OPTION> (e.g. SR_GEO_SERVE_ARCHIVE_CRON="0 2 * * *").
A deployment is scheduled when it has a source, a destination and a cron or interval; otherwise it is
served on demand:

    prefect deployment run super-resolve-scene/local -p source=in.tif -p destination=out.tif
"""

from __future__ import annotations

import click

from sr_geo.models.registry import ARCHITECTURES, SCALES


def _deployment(flow, option: str, source: str | None, destination: str | None, cron: str | None,
                interval: float | None, parameters: dict):
    """`FLOW/local`: named apart from prefect.yaml's deployments, which run on work pools instead."""
    if cron and interval:
        raise click.UsageError(f"give --{option}-cron or --{option}-interval, not both")
    if (cron or interval) and not (source and destination):
        raise click.UsageError(f"a schedule needs --{option}-source and --{option}-destination")
    paths = {"source": source, "destination": destination} if source and destination else {}
    return flow.to_deployment(name="local", cron=cron, interval=interval, parameters={**parameters, **paths},
                              tags=["sr-geo"])


@click.command(context_settings={"auto_envvar_prefix": "SR_GEO_SERVE", "show_default": True})
@click.option("--archive-source", help="Folder, glob or STAC JSON the archive deployment processes.")
@click.option("--archive-destination", help="Output folder of the archive deployment.")
@click.option("--archive-cron", help='Cron schedule of the archive deployment, e.g. "0 2 * * *".')
@click.option("--archive-interval", type=click.FloatRange(min=1), help="Seconds between archive runs.")
@click.option("--scene-source", help="Raster the scene deployment processes.")
@click.option("--scene-destination", help="Output COG of the scene deployment.")
@click.option("--scene-cron", help="Cron schedule of the scene deployment.")
@click.option("--scene-interval", type=click.FloatRange(min=1), help="Seconds between scene runs.")
@click.option("--model", default="cnn", type=click.Choice(sorted(ARCHITECTURES)))
@click.option("--scale", default=4, type=click.Choice([str(s) for s in SCALES]), callback=lambda _c, _p, v: int(v))
@click.option("--tile", default=256, type=click.IntRange(8, 4096))
@click.option("--limit", default=1, type=click.IntRange(1, 64), help="Flow runs at once in this process.")
def main(archive_source, archive_destination, archive_cron, archive_interval, scene_source, scene_destination,
         scene_cron, scene_interval, model: str, scale: int, tile: int, limit: int) -> None:
    """Serve `super-resolve-archive/local` and `super-resolve-scene/local` until interrupted."""
    from prefect import serve

    from flows.archive import super_resolve_archive
    from flows.startup import using_prefect_api
    from flows.scene import super_resolve_scene
    from sr_geo.config import load_config

    parameters = {"model": model, "scale": scale, "tile": tile}
    deployments = [
        _deployment(super_resolve_archive, "archive", archive_source, archive_destination, archive_cron,
                    archive_interval, parameters),
        _deployment(super_resolve_scene, "scene", scene_source, scene_destination, scene_cron, scene_interval,
                    parameters),
    ]
    with using_prefect_api(load_config().prefect_api_url):
        serve(*deployments, limit=limit)


if __name__ == "__main__":
    main()
