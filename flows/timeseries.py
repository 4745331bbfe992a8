"""The `super_resolve_timeseries` flow: many acquisitions of one place → one super-resolved COG.

inspect → plan → tile → infer → export → report, as `super_resolve_scene`, whose infer, export and
report tasks it reuses: only inspecting (a stack of frames) and tiling (co-registered frames into the
store's time axis) differ. The output takes the reference frame's grid, bands and nodata, and the
run report checks the output against the reference frame.

Known limitation: `sr_geo.export` marks output pixels valid where the store's *first* frame is valid,
so where the earliest frame is cloudy or nodata the fused output is written as nodata too (the
values are computed). Marking them where any frame is valid is a one-line change in export.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from prefect import flow, get_run_logger, task

from flows.scene import CONSISTENCY_ITERATIONS, _bar, export, infer, report
from sr_geo import storage
from sr_geo.inference import InferenceOptions
from sr_geo.models.registry import ARCHITECTURES, ModelSpec, build_model, weights_id
from sr_geo.plan import plan_tiles
from sr_geo.quicklook import write_quicklook
from sr_geo.stack import SCL_INVALID, CloudMask, Stack, record_stack, validate_stack_request
from sr_geo.store import TileStore
from sr_geo.tiler import tile_stack


@task(name="inspect")
def inspect_frames(sources: list[str], destination: str, spec: ModelSpec, options: InferenceOptions,
                   reference: str | None, mask: CloudMask | None, asset: str | None) -> dict:
    options.check_model(ARCHITECTURES[spec.name].temporal, spec.name)
    stack = validate_stack_request(sources, destination, spec, reference=reference, mask=mask, asset=asset)
    return stack.to_attrs()


@task(name="plan")
def plan_stack_run(stack_attrs: dict, spec: ModelSpec, options: InferenceOptions, tile: int, halo: int | None,
                   workdir: str) -> str:
    """Create (or reopen, to resume) the run's store, with the stack recorded in its attributes.

    The halo defaults to the model's receptive radius plus what the inference options add.
    """
    stack = Stack.from_attrs(stack_attrs)
    scene = stack.scene
    model = build_model(spec, scene.count)
    halo = model.receptive_radius + options.extra_radius(spec.scale) if halo is None else halo
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=tile, halo=halo, scale=spec.scale)
    sha = weights_id(spec, scene.count)
    key = stack.run_key(spec.name, sha, spec.scale, tile, halo, json.dumps(options.to_attrs(), sort_keys=True))
    url = storage.join(workdir, f"{Path(scene.path.rsplit('/', 1)[-1]).stem}-stack-{key.digest()[:16]}.zarr")
    model_attrs = {"name": spec.name, "weights_sha256": sha, "receptive_radius": model.receptive_radius}
    store = TileStore.open_or_create(url, key=key, scene=scene, plan=plan, model_attrs=model_attrs,
                                     frames=len(stack.frames), inference=options.to_attrs())
    record_stack(store, stack)
    get_run_logger().info("plan: %d frames (%s order), %d tiles of %dx%d + halo %d, overhead %.2fx",
                          len(stack.frames), stack.order, plan.n_tiles, plan.tile_height, plan.tile_width, halo,
                          plan.overhead)
    return url


@task(name="tile")
def tile_frames(store_url: str, workers: int) -> int:
    store = TileStore.open(store_url)
    pending = len(store.pending("tiled"))
    with _bar(store.plan.n_tiles, "tiling", store.plan.n_tiles - pending) as bar:
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
    batch_size: int = 4,
    workdir: str | None = None,
    device: str = "auto",
    ray_address: str | None = None,
    quicklook: str | None = None,
    keep_store: bool = False,
    uncertainty: bool = False,
    consistent: bool = False,
    reference: str | None = None,
    mask: str | None = None,
    mask_values: tuple[int, ...] = SCL_INVALID,
    asset: str | None = None,
) -> dict:
    """Super-resolve the frames `sources` names (files, globs, folders, STAC JSON) into one COG at
    `destination` on the reference frame's grid; returns the run summary."""
    spec = ModelSpec(model, scale, weights)
    options = InferenceOptions(uncertainty=uncertainty, consistency_iterations=CONSISTENCY_ITERATIONS if consistent else 0)
    cloud_mask = CloudMask(mask, tuple(mask_values)) if mask else None
    default_workdir = workdir is None
    workdir = workdir or storage.join(storage.parent(destination), ".sr-geo-work")
    seconds: dict[str, float] = {}

    def timed(stage: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        seconds[stage] = time.perf_counter() - start
        return result

    with storage.output_lock(destination):
        stack_attrs = timed("inspect", inspect_frames, list(sources), destination, spec, options, reference,
                            cloud_mask, asset)
        store_url = timed("plan", plan_stack_run, stack_attrs, spec, options, tile, halo, workdir)
        timed("tile", tile_frames, store_url, os.cpu_count() or 1)
        inferred = timed("infer", infer, store_url, spec, batch_size, device, ray_address)
        layers = timed("export", export, store_url, destination, workdir)
        stack = Stack.from_attrs(stack_attrs)
        reference_path = stack.frames[stack.reference].path
        plan = TileStore.open(store_url, mode="r").plan
        if quicklook:
            write_quicklook(reference_path, destination, scale, quicklook)
        working = sum(seconds.values()) - inferred["startup_seconds"]
        megapixels = plan.output_shape[0] * plan.output_shape[1] / 1e6
        summary = {
            "source": reference_path, "destination": destination, "model": model, "scale": scale,
            "frames": [{"path": f.path, "acquired": f.acquired, "date_source": f.date_source, "read": f.read.kind}
                       for f in stack.frames],
            "reference": stack.reference, "order": stack.order,
            "tiles": plan.n_tiles, "tiles_inferred": inferred["tiles"], "startup_seconds": inferred["startup_seconds"],
            "halo": plan.halo, "store": store_url, "layers": layers,
            "seconds": seconds, "output_megapixels": megapixels, "megapixels_per_second": megapixels / working,
        }
        summary = report(reference_path, destination, scale, summary, quicklook)
        if not keep_store:
            storage.remove_tree(store_url)
            if default_workdir and not storage.is_remote(workdir) and not any(Path(workdir).iterdir()):
                Path(workdir).rmdir()  # leave nothing beside the output but the output
    return summary
