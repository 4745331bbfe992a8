"""`sr-geo inspect SCENE`: what a run would see and do, without doing it."""

from __future__ import annotations

import click

from sr_geo.models.registry import ModelSpec, build_model
from sr_geo.plan import plan_tiles
from sr_geo.scene import inspect_scene


@click.command("inspect")
@click.argument("source")
@click.option("--model", default="cnn", show_default=True)
@click.option("--scale", default=4, show_default=True, type=int)
@click.option("--weights", type=click.Path(dir_okay=False))
@click.option("--tile", default=256, show_default=True, type=click.IntRange(8, 4096))
@click.option("--halo", type=click.IntRange(0, 1024))
def command(source: str, model: str, scale: int, weights: str | None, tile: int, halo: int | None) -> None:
    """Print the grid, bands, dtype, nodata and the tile plan a run would use."""
    scene = inspect_scene(source)
    sr_model = build_model(ModelSpec(model, scale, weights), scene.count)
    halo = sr_model.receptive_radius if halo is None else halo
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=tile, halo=halo, scale=scale)
    grid, out = scene.grid, scene.grid.zoom_in(scale)
    left, bottom, right, top = grid.bounds
    lines = [
        f"source      {source}",
        f"size        {grid.width} x {grid.height} px, {scene.count} bands, {scene.dtype}",
        f"crs         {_crs_name(grid.crs)}",
        f"pixel size  {grid.resolution[0]:g} x {grid.resolution[1]:g}",
        f"bounds      left {left:.6f} bottom {bottom:.6f} right {right:.6f} top {top:.6f}",
        f"nodata      {scene.nodata}{' + mask' if scene.has_mask else ''}",
        f"bands       {', '.join(scene.band_names)}",
        f"scale/offs  {list(scene.scales)} / {list(scene.offsets)}",
        f"model       {model} x{scale}, receptive radius {sr_model.receptive_radius} px",
        f"output      {out.width} x {out.height} px, pixel size {out.resolution[0]:g} x {out.resolution[1]:g}",
        f"tile plan   {plan.rows} x {plan.cols} = {plan.n_tiles} tiles, core {plan.tile_height} x {plan.tile_width}"
        f" + halo {plan.halo}, region {plan.region_shape[0]} x {plan.region_shape[1]}, overhead {plan.overhead:.2f}x",
    ]
    click.echo("\n".join(lines))


def _crs_name(wkt: str) -> str:
    from rasterio.crs import CRS

    crs = CRS.from_wkt(wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()
