"""The `super_resolve_archive` flow: discover → group → each scene (skip or super-resolve) → STAC → report.

Scenes run as Prefect tasks (`.submit()` on the flow's thread-pool task runner), at most
`scenes_in_flight` at once; each scene is the `super_resolve_scene` flow, nested, so it keeps its
own resumable store, stage retries and report. Tiles in flight are bounded inside each scene by the
batch size and the predictor actors, and all scenes share one Ray connection. A failed scene is
retried (`scene_retries`) unless its input or request is at fault, and never stops the others: the
summary and the table artifact give each failure's reason on one line.

Time stacks (several dates on one grid) are recognised and recorded in the summary; until the
time-series flow exists, each member of a stack runs through `super_resolve_scene` on its own.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path

from prefect import Task, flow, task
from prefect.artifacts import create_table_artifact
from prefect.futures import as_completed
from prefect.settings import PREFECT_API_URL, temporary_settings

from flows.scene import super_resolve_scene
from sr_geo import storage
from sr_geo.catalog import (
    ITEM_COLLECTION,
    WORKDIR,
    Manifest,
    ManifestEntry,
    Provenance,
    Rejected,
    Scene,
    SceneGroup,
    SourceRef,
    discover,
    group_scenes,
    inspect_all,
    one_line,
    output_tags,
    source_identity,
    stale_reason,
)
from sr_geo.config import load_config
from sr_geo.errors import SrGeoError
from sr_geo.models.registry import ModelSpec, build_model
from sr_geo.stac import output_item, write_item_collection
from workers.cluster import ray_session


@contextmanager
def using_prefect_api(url: str | None) -> Iterator[None]:
    """Talk to the Prefect server at `url`; with None, whatever Prefect's own settings say."""
    with temporary_settings(updates={PREFECT_API_URL: url}) if url else nullcontext():
        yield


@task(name="discover")
def discover_scenes(source: str, destination: str, asset: str | None
                    ) -> tuple[tuple[SceneGroup, ...], tuple[Rejected, ...], tuple[str, ...]]:
    found = discover(source, destination, asset)
    scenes, unreadable = inspect_all(found.refs)
    return group_scenes(scenes), found.rejected + unreadable, found.ignored


def _retry_unless_bad_input(task, task_run, state) -> bool:
    """Retrying cannot fix an unreadable input or an impossible request; anything else may be transient."""
    return not isinstance(state.data, SrGeoError)


@task(name="scene", task_run_name="scene {scene.ref.relpath}", retry_condition_fn=_retry_unless_bad_input)
def process_scene(scene: Scene, destination: str, run: dict) -> dict:
    """Skip the scene if its output is current, else super-resolve it and record it in the manifest."""
    ref, root = scene.ref, Path(destination)
    output = root / ref.output_relpath
    manifest = Manifest(destination)
    entry = manifest.get(ref.output_relpath)
    identity = source_identity(ref.href, entry.identity if entry and entry.source == ref.href else None)
    requested = Provenance.requested(ModelSpec(run["model"], run["scale"], run["weights"]), scene.bands,
                                     tile=run["tile"], halo=run["halo"], uncertainty=run["uncertainty"],
                                     consistent=run["consistent"])
    missing = [layer for layer in entry.layers if not (root / layer).exists()] if entry else []
    reason = stale_reason(requested, identity, output_tags(output), entry, missing)
    if reason is None:
        return {"status": "skipped", "reason": "up to date"}
    summary = super_resolve_scene(ref.href, str(output), **run)
    layers = tuple(Path(path).relative_to(root).as_posix() for path in summary["layers"].values())
    manifest.record(ref.output_relpath, ManifestEntry(ref.href, identity.size, identity.mtime, identity.sha256,
                                                      output_tags(output)["SR_GEO_RUN_KEY"], requested, layers))
    return {"status": "done", "reason": reason}


def _bounded(scene_task: Task, scenes: list[Scene], limit: int, **parameters) -> Iterator[tuple[Scene, dict]]:
    """Run at most `limit` scenes at once; yield each scene's outcome as it finishes.

    A scene is submitted only when a slot is free, so the seconds from submission to outcome are the
    time it ran, retries included, whether it succeeded or not.
    """
    queue, running = list(scenes), {}
    while queue or running:
        while queue and len(running) < limit:
            scene = queue.pop(0)
            running[scene_task.submit(scene, **parameters)] = (scene, time.perf_counter())
        future = next(as_completed(list(running)))
        scene, start = running.pop(future)
        try:
            outcome = future.result()
        except Exception as exc:  # noqa: BLE001 - one scene's failure is reported, never raised
            outcome = {"status": "failed", "reason": one_line(exc).removeprefix(f"{scene.ref.href}: ")}
        yield scene, {**outcome, "seconds": time.perf_counter() - start}


@task(name="catalogue")
def catalogue(destination: str, refs: list[SourceRef]) -> str:
    """The ItemCollection of every current output of this run (made now or skipped as current)."""
    manifest = Manifest(destination)
    items = [
        output_item(Path(destination) / ref.output_relpath, source=ref,
                    item_id=ref.output_relpath.removesuffix(".tif").replace("/", "-"),
                    source_sha256=manifest.get(ref.output_relpath).sha256)
        for ref in refs
    ]
    return str(write_item_collection(items, Path(destination) / ITEM_COLLECTION))


@task(name="report")
def report(rows: list[dict]) -> None:
    table = [{k: row[k] for k in ("scene", "status", "seconds", "reason")} for row in rows]
    create_table_artifact(table, key="sr-geo-archive", description="sr-geo archive run: one row per input")


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
    batch_size: int | None = None,
    workdir: str | None = None,
    ray_address: str | None = None,
    scenes_in_flight: int | None = None,
    scene_retries: int | None = None,
) -> dict:
    """Super-resolve every raster `source` names into COGs under `destination`; returns the run summary.

    Parameters left as None come from the configuration (`sr_geo.config`: SR_GEO_CONFIG file and
    SR_GEO_* environment), so a scheduled run is tuned where it runs.
    """
    config = load_config(batch_size=batch_size, workdir=workdir, ray_address=ray_address,
                         scenes_in_flight=scenes_in_flight, scene_retries=scene_retries)
    build_model(ModelSpec(model, scale, weights), bands=1)  # an impossible request fails before any scene starts
    destination = destination if storage.is_remote(destination) else os.path.abspath(destination)
    groups, rejected, ignored = discover_scenes(source, destination, asset)
    run = {"model": model, "scale": scale, "weights": weights, "tile": tile, "halo": halo, "device": device,
           "keep_store": keep_store, "uncertainty": uncertainty, "consistent": consistent,
           "batch_size": config.batch_size, "workdir": config.workdir or os.path.join(destination, WORKDIR),
           "ray_address": config.ray_address}
    scene_task = process_scene.with_options(retries=config.scene_retries, retry_delay_seconds=2)
    group_of = {member: group for group in groups for member in group.members}
    rows = [{"scene": r.name, "group": None, "status": "failed", "seconds": 0.0, "reason": r.reason} for r in rejected]
    with ray_session(config.ray_address, num_cpus=os.cpu_count()):
        for scene, outcome in _bounded(scene_task, list(group_of), config.scenes_in_flight,
                                       destination=destination, run=run):
            rows.append({"scene": scene.ref.relpath, "group": group_of[scene].id, **outcome})
    rows.sort(key=lambda row: (row["status"] != "failed", row["scene"]))
    current = {row["scene"] for row in rows if row["status"] != "failed"}
    stac = catalogue(destination, sorted((s.ref for s in group_of if s.ref.relpath in current),
                                         key=lambda ref: ref.relpath))
    report(rows)
    counts = {status: sum(row["status"] == status for row in rows) for status in ("done", "skipped", "failed")}
    return {
        "source": source,
        "destination": destination,
        "scenes": rows,
        "groups": [{"id": g.id, "kind": g.kind, "members": [m.ref.relpath for m in g.members]} for g in groups],
        "ignored": list(ignored),
        "failed": [f"{row['scene']}: {row['reason']}" for row in rows if row["status"] == "failed"],
        "counts": counts,
        "item_collection": stac,
        "manifest": str(Manifest(destination).path),
    }
