"""The `super_resolve_scene` flow: inspect → plan → tile → infer → export → report.

The store's per-tile markers make every stage resumable: rerunning the flow after a crash redoes
only the tiles that were not finished. From the plan on, the stages are those of `flows.stages`.
"""

from __future__ import annotations

import os

from prefect import flow, task

from flows.stages import Run, plan_run, progress_bar
from sr_geo import storage
from sr_geo.config import SettingValue
from sr_geo.models.registry import ModelSpec
from sr_geo.preflight import validate_request
from sr_geo.store import TileStore
from sr_geo.tiler import tile_scene


@task(name="inspect")
def inspect_input(source: str, destination: str, spec: ModelSpec) -> dict:
    return validate_request(source, destination, spec).to_attrs()


@task(name="tile")
def tile_input(store_url: str, source: str, workers: int) -> int:
    store = TileStore.open(store_url)
    pending = len(store.pending("tiled"))
    with progress_bar(store.plan.n_tiles, "tiling", store.plan.n_tiles - pending) as bar:
        return tile_scene(store_url, source, workers=workers, on_tile=lambda _: bar.update())


@flow(name="super-resolve-scene")
def super_resolve_scene(
    source: str,
    destination: str,
    model: str = "cnn",
    scale: int = 4,
    weights: str | None = None,
    tile: int = 256,
    halo: int | None = None,
    device: str = "auto",
    quicklook: str | None = None,
    keep_store: bool = False,
    uncertainty: bool = False,
    consistent: bool = False,
    sensor_mtf: float | None = None,
    **settings: SettingValue,
) -> dict:
    """Super-resolve one georeferenced raster into a COG at `destination`; returns the run summary.

    `settings` are `sr_geo.config.Config` fields (batch_size, actors, threads, gpus_per_actor,
    ray_address, workdir, ...): those given override the configuration where the flow runs.
    """
    run = Run.start(destination, model, scale, weights, uncertainty, consistent, sensor_mtf, settings)
    with storage.output_lock(destination):
        scene_attrs = run.timed("inspect", inspect_input, source, destination, run.spec)
        store_url = run.timed("plan", plan_run, scene_attrs, run.spec, run.options, tile, halo, run.workdir,
                              destination)
        run.timed("tile", tile_input, store_url, source, os.cpu_count() or 1)
        return run.finish(store_url, source, device, quicklook, keep_store)
