"""The `super_resolve_timeseries` flow: many acquisitions of one place → one super-resolved COG.

inspect → plan → tile → infer → export → report, as `super_resolve_scene`: only inspecting (a stack
of frames) and tiling (co-registered frames into the store's time axis) differ, and the stages from
the plan on are those of `flows.stages`. The output takes the reference frame's grid, bands and
nodata, and the run report checks the output against the reference frame.
"""

from __future__ import annotations

import os

from prefect import flow, task

from flows.stages import Run, plan_run, progress_bar
from sr_geo import storage
from sr_geo.config import SettingValue
from sr_geo.inference_options import InferenceOptions
from sr_geo.models.registry import ARCHITECTURES, ModelSpec
from sr_geo.preflight import check_uncertainty
from sr_geo.stack import SCL_INVALID, CloudMask, Stack, validate_stack_request
from sr_geo.store import TileStore
from sr_geo.tiler import tile_stack


@task(name="inspect")
def inspect_frames(sources: list[str], destination: str, spec: ModelSpec, options: InferenceOptions,
                   reference: str | None, mask: CloudMask | None, asset: str | None) -> dict:
    check_uncertainty(options.uncertainty, ARCHITECTURES[spec.name].temporal, spec.name)
    stack = validate_stack_request(sources, destination, spec, reference=reference, mask=mask, asset=asset)
    return stack.to_attrs()


@task(name="tile")
def tile_frames(store_url: str, workers: int) -> int:
    store = TileStore.open(store_url)
    pending = len(store.pending("tiled"))
    with progress_bar(store.plan.n_tiles, "tiling", store.plan.n_tiles - pending) as bar:
        return tile_stack(store_url, workers=workers, on_tile=lambda _: bar.update())


@flow(name="super-resolve-timeseries")
def super_resolve_timeseries(
    sources: list[str],
    destination: str,
    model: str = "rnn",
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
    reference: str | None = None,
    mask: str | None = None,
    mask_values: tuple[int, ...] = SCL_INVALID,
    asset: str | None = None,
    **settings: SettingValue,
) -> dict:
    """Super-resolve the frames `sources` names (files, globs, folders, STAC JSON) into one COG at
    `destination` on the reference frame's grid; returns the run summary.

    `settings` are `sr_geo.config.Config` fields, as for `super_resolve_scene`.
    """
    run = Run.start(destination, model, scale, weights, uncertainty, consistent, sensor_mtf, settings)
    cloud_mask = CloudMask(mask, tuple(mask_values)) if mask else None
    with storage.output_lock(destination):
        stack_attrs = run.timed("inspect", inspect_frames, list(sources), destination, run.spec, run.options,
                                reference, cloud_mask, asset)
        store_url = run.timed("plan", plan_run, stack_attrs["scene"], run.spec, run.options, tile, halo,
                              run.workdir, destination, stack_attrs)
        run.timed("tile", tile_frames, store_url, os.cpu_count() or 1)
        stack = Stack.from_attrs(stack_attrs)
        frames = [{"path": f.path, "acquired": f.acquired, "date_source": f.date_source, "read": f.read.kind,
                   "shift": f.shift} for f in stack.frames]
        # Where a temporal model puts its output (sr_geo.models.rnn): the frames' mean shift from the reference.
        centroid = [float(v) for v in stack.shifts().mean(axis=0)]
        return run.finish(store_url, stack.frames[stack.reference].path, device, quicklook, keep_store,
                          frames=frames, reference=stack.reference, order=stack.order, centroid=centroid)
