"""The `super_resolve_archive` flow: discover → group → each output (skip or make) → STAC → report.

Outputs run as Prefect tasks (`.submit()` on the flow's thread-pool task runner), at most
`scenes_in_flight` at once. With a single-image model every scene is its own output, made by the
`super_resolve_scene` flow; with a temporal model every group (a time stack of one footprint, or a
lone scene) is one output, made by `super_resolve_timeseries`. Either flow runs nested, so it keeps
its own resumable store, stage retries and report. Tiles in flight are bounded inside each run by the
batch size and the predictor actors, and all runs share one Ray connection. A failed output is
retried (`scene_retries`) unless its input or request is at fault, and never stops the others: the
summary and the table artifact give each failure's reason on one line.

The destination may be a folder or an object-store prefix (`s3://bucket/prefix`): outputs, the
manifest and the STAC ItemCollection go there, and skip decisions read the outputs' tags back from it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import asdict, replace

from prefect import Task, flow, task
from prefect.artifacts import create_table_artifact
from prefect.futures import as_completed

from flows.scene import super_resolve_scene
from flows.stages import retry_unless_bad_input
from flows.timeseries import super_resolve_timeseries
from sr_geo import storage
from sr_geo.catalog import (
    ITEM_COLLECTION,
    WORKDIR,
    Manifest,
    ManifestEntry,
    Provenance,
    Rejected,
    SceneGroup,
    discover,
    group_scenes,
    inspect_all,
    one_line,
    output_tags,
    source_identity,
    stale_reason,
)
from sr_geo.config import SettingValue, load_config
from sr_geo.inference_options import InferenceOptions
from sr_geo.models.registry import ARCHITECTURES, ModelSpec, check_weights
from sr_geo.stac import output_item, write_item_collection
from workers.cluster import ray_session


@task(name="discover")
def discover_scenes(source: str, destination: str, asset: str | None
                    ) -> tuple[tuple[SceneGroup, ...], tuple[Rejected, ...], tuple[str, ...]]:
    found = discover(source, destination, asset)
    scenes, unreadable = inspect_all(found.refs)
    return group_scenes(scenes), found.rejected + unreadable, found.ignored


def _relative(path: str, destination: str) -> str:
    return path.removeprefix(storage.join(destination, ""))


@task(name="scene", task_run_name="scene {unit.latest.ref.relpath}", retry_condition_fn=retry_unless_bad_input)
def process_scene(unit: SceneGroup, destination: str, run: dict) -> dict:
    """Skip the output if it is current, else make it (from one scene or a time stack) and record it."""
    ref = unit.latest.ref
    output = storage.join(destination, ref.output_relpath)
    manifest = Manifest(destination)
    entry = manifest.get(ref.output_relpath)
    sources = tuple(source_identity(m.ref.href, entry.known(m.ref.href) if entry else None) for m in unit.members)
    requested = Provenance.requested(ModelSpec(run["model"], run["scale"], run["weights"]), unit.latest.bands,
                                     tile=run["tile"], halo=run["halo"], uncertainty=run["uncertainty"],
                                     consistent=run["consistent"], sensor_mtf=run["sensor_mtf"])
    missing = [layer for layer in entry.layers if not storage.exists(storage.join(destination, layer))] if entry else []
    reason = stale_reason(requested, sources, output_tags(output), entry, missing)
    if reason is None:
        return {"status": "skipped", "reason": "up to date"}
    if ARCHITECTURES[run["model"]].temporal:
        summary = super_resolve_timeseries([m.ref.href for m in unit.members], output, reference=ref.href, **run)
    else:
        summary = super_resolve_scene(ref.href, output, **run)
    layers = tuple(_relative(path, destination) for path in summary["layers"].values())
    manifest.record(ref.output_relpath, ManifestEntry(sources, output_tags(output)["SR_GEO_RUN_KEY"], requested,
                                                      layers))
    return {"status": "done", "reason": reason}


def _bounded(scene_task: Task, units: list[SceneGroup], limit: int, **parameters
             ) -> Iterator[tuple[SceneGroup, dict]]:
    """Run at most `limit` outputs at once; yield each one's outcome as it finishes.

    An output is submitted only when a slot is free, so the seconds from submission to outcome are
    the time it ran, retries included, whether it succeeded or not.
    """
    queue, running = list(units), {}
    while queue or running:
        while queue and len(running) < limit:
            unit = queue.pop(0)
            running[scene_task.submit(unit, **parameters)] = (unit, time.perf_counter())
        future = next(as_completed(list(running)))
        unit, start = running.pop(future)
        try:
            outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - one output's failure is reported, never raised
            outcome = {"status": "failed", "reason": one_line(exc).removeprefix(f"{unit.latest.ref.href}: ")}
        yield unit, {**outcome, "seconds": time.perf_counter() - start}


@task(name="catalogue")
def catalogue(destination: str, units: list[SceneGroup]) -> str:
    """The ItemCollection of every current output of this run (made now or skipped as current)."""
    manifest = Manifest(destination)
    items = []
    for unit in units:
        relpath = unit.latest.ref.output_relpath
        items.append(output_item(storage.join(destination, relpath),
                                 item_id=relpath.removesuffix(".tif").replace("/", "-"),
                                 sources=[m.ref for m in unit.members], identities=manifest.get(relpath).sources))
    return write_item_collection(items, storage.join(destination, ITEM_COLLECTION))


@task(name="report")
def report(rows: list[dict]) -> None:
    table = [{k: row[k] for k in ("scene", "frames", "status", "seconds", "reason")} for row in rows]
    create_table_artifact(table, key="sr-geo-archive", description="sr-geo archive run: one row per output")


@flow(name="super-resolve-archive")
def super_resolve_archive(
    source: str,
    destination: str,
    model: str = "cnn",
    scale: int = 4,
    weights: str | None = None,
    tile: int = 256,
    halo: int | None = None,
    device: str = "auto",
    asset: str | None = None,
    keep_store: bool = False,
    uncertainty: bool = False,
    consistent: bool = False,
    sensor_mtf: float | None = None,
    **settings: SettingValue,
) -> dict:
    """Super-resolve every raster `source` names into COGs under `destination`; returns the run summary.

    `settings` are `sr_geo.config.Config` fields (scenes_in_flight, scene_retries, batch_size, actors,
    ...): those given override the configuration where the flow runs (SR_GEO_CONFIG file, SR_GEO_*
    environment), so a scheduled run is tuned where it runs. They are resolved once, here, and every
    scene runs with exactly these.
    """
    check_weights(ModelSpec(model, scale, weights), bands=1)  # an impossible request fails before any scene starts
    temporal = ARCHITECTURES[model].temporal
    InferenceOptions.requested(uncertainty, consistent, temporal, model, sensor_mtf)
    destination = destination if storage.is_remote(destination) else os.path.abspath(destination)
    config = load_config(**settings)
    if config.workdir is None:
        config = replace(config, workdir=storage.join(destination, WORKDIR))
    groups, rejected, ignored = discover_scenes(source, destination, asset)
    run = {"model": model, "scale": scale, "weights": weights, "tile": tile, "halo": halo, "device": device,
           "keep_store": keep_store, "uncertainty": uncertainty, "consistent": consistent, "sensor_mtf": sensor_mtf,
           **asdict(config)}
    scene_task = process_scene.with_options(retries=config.scene_retries, retry_delay_seconds=2)
    group_of = {unit: group for group in groups for unit in ((group,) if temporal else group.singles())}
    rows = [{"scene": r.name, "group": None, "frames": 1, "status": "failed", "seconds": 0.0, "reason": r.reason}
            for r in rejected]
    with ray_session(config.ray_address, num_cpus=os.cpu_count()):
        for unit, outcome in _bounded(scene_task, list(group_of), config.scenes_in_flight,
                                      destination=destination, run=run):
            rows.append({"scene": unit.latest.ref.relpath, "group": group_of[unit].id, "frames": len(unit.members),
                         **outcome})
    rows.sort(key=lambda row: (row["status"] != "failed", row["scene"]))
    current = {row["scene"] for row in rows if row["status"] != "failed"}
    stac = catalogue(destination, sorted((u for u in group_of if u.latest.ref.relpath in current),
                                         key=lambda unit: unit.latest.ref.relpath))
    report(rows)
    counts = {status: sum(row["status"] == status for row in rows) for status in ("done", "skipped", "failed")}
    return {
        "source": source,
        "destination": destination,
        "scenes": rows,
        "groups": [{"id": g.id, "kind": g.kind, "members": [m.ref.relpath for m in g.members]} for g in groups],
        "stacks_fused": temporal,
        "ignored": list(ignored),
        "failed": [f"{row['scene']}: {row['reason']}" for row in rows if row["status"] == "failed"],
        "counts": counts,
        "item_collection": stac,
        "manifest": Manifest(destination).path,
    }
