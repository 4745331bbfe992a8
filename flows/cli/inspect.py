"""`sr-geo inspect SOURCE...`: what a run (or a stack run) would see and do, without doing it."""

from __future__ import annotations

import click
from rasterio.crs import CRS

from flows.cli.options import stack_options
from sr_geo.inference import tile_bytes
from sr_geo.models.registry import ARCHITECTURES, ModelSpec, build_model
from sr_geo.plan import plan_tiles
from sr_geo.scene import SceneInfo, inspect_scene
from sr_geo.stack import (CloudMask, Stack, clearest_frame, inspect_stack, names_a_stack, parse_mask_values,
                          valid_fractions)


@click.command("inspect")
@click.argument("sources", nargs=-1, required=True, metavar="SOURCE...")
@click.option("--model", help="Model a run would use [default: cnn for one raster, rnn for a stack].")
@click.option("--scale", default=4, show_default=True, type=int)
@click.option("--weights", type=click.Path(dir_okay=False))
@click.option("--tile", default=256, show_default=True, type=click.IntRange(8, 4096))
@click.option("--halo", type=click.IntRange(0, 1024))
@stack_options
def command(sources: tuple[str, ...], model: str | None, scale: int, weights: str | None, tile: int,
            halo: int | None, reference: str | None, mask_source: str | None, mask_values: str,
            asset: str | None) -> None:
    """Print the grid, bands, dtype, nodata and the tile plan a run would use. Several SOURCEs, or one
    folder, glob or STAC ItemCollection, are a time stack as run-stack reads it: also print its frames in
    time order with their dates, how each reaches the reference grid (read as is, or warped), the
    fraction of that grid each frame observes and its measured sub-pixel shift against the reference."""
    if not names_a_stack(sources) and not (reference or mask_source or asset):
        scene = inspect_scene(sources[0])
        lines = [f"source      {sources[0]}", *_scene_lines(scene),
                 *_run_lines(scene, 1, model or "cnn", scale, weights, tile, halo)]
    else:
        mask = CloudMask(mask_source, parse_mask_values(mask_values)) if mask_source else None
        stack = inspect_stack(sources, reference=reference, mask=mask, asset=asset)
        fractions = valid_fractions(stack)
        model = model or "rnn"
        lines = [*_stack_lines(stack, fractions), *_scene_lines(stack.scene),
                 *_run_lines(stack.scene, len(stack.frames), model, scale, weights, tile, halo)]
        if not ARCHITECTURES[model].temporal:
            lines.append(f"note        {model} is a single-image model: a run uses only the clearest frame "
                         f"({clearest_frame(fractions) + 1}); rnn fuses them all")
    click.echo("\n".join(lines))


def _stack_lines(stack: Stack, fractions: tuple[float, ...]) -> list[str]:
    """The frames in time order: date and where it came from, how the frame reaches the reference grid,
    and the fraction of that grid it observes (its mask, its cover, its cloud mask)."""
    lines = [f"frames      {len(stack.frames)}, order: {stack.order}"]
    for i, (frame, fraction) in enumerate(zip(stack.frames, fractions, strict=True)):
        if frame.read.warped:
            how = f"warp ({frame.read.resampling})"
        else:
            how = "read" + (f", offset {frame.read.row:+d},{frame.read.col:+d} px" if frame.read.row or frame.read.col else "")
        date = f"{frame.acquired} ({frame.date_source})" if frame.acquired else "no date"
        mask = f", mask {frame.mask_path}" if frame.mask_path else ""
        marker = "  reference" if i == stack.reference else ""
        shift = (f"shift {frame.shift[0]:+.2f},{frame.shift[1]:+.2f} px" if frame.shift is not None
                 else "shift unknown (too few pixels valid in both)")
        lines.append(f"  {i + 1:>2}  {date}  {frame.path}{mask}  {how}  valid {100 * fraction:.1f} %  {shift}{marker}")
    warped = sum(frame.read.warped for frame in stack.frames)
    lines.append(
        f"co-reg      {warped} of {len(stack.frames)} frames warped onto the reference grid"
        + (" (another CRS, pixel size or lattice); the others are read as they are" if warped
           else ": none needed, every frame is on the reference lattice")
    )
    if stack.mask_invalid:
        lines.append(f"cloud mask  values {', '.join(map(str, stack.mask_invalid))} are invalid")
    lines.append(f"reference   frame {stack.reference + 1}: {stack.frames[stack.reference].path}")
    return lines


def _scene_lines(scene: SceneInfo) -> list[str]:
    grid = scene.grid
    left, bottom, right, top = grid.bounds
    return [
        f"size        {grid.width} x {grid.height} px, {scene.count} bands, {scene.dtype}",
        f"crs         {_crs_name(grid.crs)}",
        f"pixel size  {grid.resolution[0]:g} x {grid.resolution[1]:g}",
        f"bounds      left {left:.6f} bottom {bottom:.6f} right {right:.6f} top {top:.6f}",
        f"nodata      {scene.nodata}{' + mask' if scene.has_mask else ''}",
        f"bands       {', '.join(scene.band_names)}",
        f"scale/offs  {list(scene.scales)} / {list(scene.offsets)}",
    ]


def _run_lines(scene: SceneInfo, frames: int, model: str, scale: int, weights: str | None, tile: int,
               halo: int | None) -> list[str]:
    sr_model = build_model(ModelSpec(model, scale, weights), scene.count)
    halo = sr_model.receptive_radius if halo is None else halo
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=tile, halo=halo, scale=scale)
    out = scene.grid.zoom_in(scale)
    return [
        f"model       {model} x{scale}, receptive radius {sr_model.receptive_radius} px",
        f"output      {out.width} x {out.height} px, pixel size {out.resolution[0]:g} x {out.resolution[1]:g}",
        f"tile plan   {plan.rows} x {plan.cols} = {plan.n_tiles} tiles, core {plan.tile_height} x {plan.tile_width}"
        f" + halo {plan.halo}, region {plan.region_shape[0]} x {plan.region_shape[1]}, overhead {plan.overhead:.2f}x",
        f"memory      {tile_bytes(sr_model, scene.count, frames, plan.region_shape) / 2**30:.2f} GiB of model working"
        " memory per tile (a model call holds the tiles that fit in 3/4 of an actor's memory)",
    ]


def _crs_name(wkt: str) -> str:
    crs = CRS.from_wkt(wkt)
    epsg = crs.to_epsg()
    return f"EPSG:{epsg}" if epsg else crs.to_string()
