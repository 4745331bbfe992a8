"""What the scene and time-series flows share: the plan, infer, export and report stages, and the run
around them (settings, stage timings, summary, store clean-up).

The two flows differ only in what they inspect (one raster, or a stack of frames) and how they tile
it into the store; from the plan on, a run is the same, so it is recorded, reported and cleaned up
the same way. Tasks pass paths, store URLs and tile counts, never pixels.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from tqdm import tqdm

from sr_geo import __version__, storage
from sr_geo.config import Config, load_config
from sr_geo.errors import SrGeoError
from sr_geo.export import export_cog
from sr_geo.hardware import emulated_bfloat16
from sr_geo.inference_options import InferenceOptions
from sr_geo.models.registry import ARCHITECTURES, ModelSpec, receptive_radius, weights_id
from sr_geo.plan import plan_tiles
from sr_geo.quicklook import write_quicklook
from sr_geo.report import consistency_check
from sr_geo.scene import SceneInfo
from sr_geo.stack import Stack, record_stack
from sr_geo.store import RunKey, TileStore
from workers.cluster import cluster_resources, ray_session
from workers.predictor import run_pool, size_pool


def progress_bar(total: int, desc: str, initial: int = 0) -> tqdm:
    # disable=None: bars only on a terminal, so concurrent scenes in logs never interleave them.
    return tqdm(total=total, initial=initial, desc=f"{desc:<9}", unit="tile", leave=True, dynamic_ncols=True,
                disable=None)


def retry_unless_bad_input(task, task_run, state) -> bool:
    """Retrying cannot fix an unreadable input or an impossible request; anything else may be transient."""
    return not isinstance(state.data, SrGeoError)


@task(name="plan")
def plan_run(scene_attrs: dict, spec: ModelSpec, options: InferenceOptions, tile: int, halo: int | None,
             workdir: str, destination: str, stack_attrs: dict | None = None) -> str:
    """Create (or reopen, to resume) the run's store; a stack's frames are part of its key and attributes.

    The halo defaults to the model's receptive radius plus what the inference options add.
    """
    scene = SceneInfo.from_attrs(scene_attrs)
    stack = Stack.from_attrs(stack_attrs) if stack_attrs else None
    radius = receptive_radius(spec, scene.count)
    halo = radius + options.extra_radius(spec.scale, ARCHITECTURES[spec.name].temporal) if halo is None else halo
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=tile, halo=halo, scale=spec.scale)
    sha = weights_id(spec, scene.count)
    inference = json.dumps(options.to_attrs(), sort_keys=True)
    key = (stack.run_key(spec.name, sha, spec.scale, tile, halo, inference) if stack else
           RunKey(scene.path, scene.size_bytes, scene.mtime, spec.name, sha, spec.scale, tile, halo, inference))
    # One store per output too: runs of one scene to two outputs never delete each other's store (runs
    # on one output are serialised by `storage.output_lock`).
    name = hashlib.sha256(f"{key.digest()} {destination}".encode()).hexdigest()[:16]
    url = storage.join(workdir, f"{Path(scene.path.rsplit('/', 1)[-1]).stem}-{name}.zarr")
    model_attrs = {"name": spec.name, "weights_sha256": sha, "receptive_radius": radius}
    store = TileStore.open_or_create(url, key=key, scene=scene, plan=plan, model_attrs=model_attrs,
                                     frames=len(stack.frames) if stack else 1, inference=options.to_attrs())
    if stack:
        record_stack(store, stack)
    frames = f"{len(stack.frames)} frames ({stack.order} order), " if stack else ""
    get_run_logger().info("plan: %s%d tiles of %dx%d + halo %d, overhead %.2fx", frames, plan.n_tiles,
                          plan.tile_height, plan.tile_width, halo, plan.overhead)
    return url


@task(name="infer", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_bad_input)
def infer(store_url: str, spec: ModelSpec, config: Config, device: str) -> dict:
    """Returns tiles inferred now, the one-time start-up seconds (Ray, actors, model loading), the pool and
    what its actors ran on (nothing when no tile was left to infer)."""
    store = TileStore.open(store_url)
    start = time.perf_counter()
    with ray_session(config.ray_address, num_cpus=os.cpu_count()):
        ray_seconds = time.perf_counter() - start
        pool = size_pool(config, device, *cluster_resources())
        if redone := store.claim_precision(pool.precision):
            get_run_logger().warning("%d finished tiles were inferred in another precision than %s: redone in it",
                                     redone, pool.precision)
        pending = store.pending("done")
        with progress_bar(store.plan.n_tiles, "inference", store.plan.n_tiles - len(pending)) as bar:
            run = run_pool(store_url, pending, spec, store.group["input"].shape[2], pool,
                           on_batch=lambda ids: bar.update(len(ids)))
    return {"tiles": run.tiles, "startup_seconds": ray_seconds + run.startup_seconds, "pool": asdict(pool),
            "hardware": list(run.hardware)}


@task(name="export", retries=2, retry_delay_seconds=2, retry_condition_fn=retry_unless_bad_input)
def export(store_url: str, destination: str, workdir: str, compression: str) -> dict[str, str]:
    """Write the COG (and the uncertainty COG beside it, when the run has one); returns layer → path."""
    store = TileStore.open(store_url, mode="r")
    missing = len(store.pending("done"))
    if missing:
        raise RuntimeError(f"{missing} tiles have no output yet; inference did not finish")
    layers = {"output": destination}
    if "uncertainty" in store.group:
        stem, dot, suffix = destination.rpartition(".")
        layers["uncertainty"] = f"{stem}_uncertainty.{suffix}" if dot else f"{destination}_uncertainty.tif"
    with storage.scratch_dir(workdir) as scratch:
        for layer, path in layers.items():
            with progress_bar(store.plan.n_tiles, layer[:9]) as bar:
                export_cog(store, path, scratch, layer=layer, on_tile=lambda _: bar.update(),
                           compression=compression)
    return layers


def describe_pool(pool: dict, hardware: list[str]) -> str:
    """One line for reports, e.g. `2 actors × 4 threads, 0.5 GPU each on NVIDIA H100 80GB HBM3 in bfloat16,
    batches of 8 tiles`: the actors' `hardware` where they reported it, else the device type. bfloat16
    that a CPU only emulates is named, since it is then several times slower than float32."""
    gpus = f", {pool['gpus_per_actor']:g} GPU each" if pool["gpus_per_actor"] else ""
    actors = f"{pool['actors']} actor{'s' if pool['actors'] != 1 else ''}"
    where = "; ".join(hardware) or pool["device"]
    emulated = emulated_bfloat16(pool["precision"], hardware)
    warning = " (emulated where a CPU lacks it: several times slower than float32)" if emulated else ""
    return (f"{actors} × {pool['threads']} threads{gpus} on {where} in {pool['precision']}{warning}, "
            f"batches of {pool['batch_size']} tiles")


@task(name="report")
def report(source: str, destination: str, scale: int, summary: dict, quicklook: str | None) -> dict:
    check = consistency_check(source, destination, scale)
    summary = {**summary, "consistency": check.to_dict()}
    lines = [
        f"# sr-geo: {os.path.basename(source)} → {os.path.basename(destination)}",
        "",
        f"Model `{summary['model']}` ×{scale}, sr-geo {__version__}; {summary['tiles']} tiles "
        f"({summary['tiles_inferred']} inferred in this run), {summary['output_megapixels']:.2f} output MP, "
        f"{summary['megapixels_per_second']:.2f} MP/s end to end after {summary['startup_seconds']:.1f} s of "
        "one-time start-up (Ray, actors, model loading).",
        "",
        f"Inference: {describe_pool(summary['pool'], summary['hardware'])}.",
        "",
        "| stage | seconds |",
        "|---|---|",
        *[f"| {stage} | {seconds:.2f} |" for stage, seconds in summary["seconds"].items()],
        "",
        "## Consistency with the input",
        "The output block-averaged back onto the input grid, against the input: PSNR per band, and the "
        "shift between them by phase correlation (a correct run shows a shift of a few hundredths).",
        "",
        "| band | PSNR (dB) |",
        "|---|---|",
        *[f"| {i + 1} | {p:.2f} |" for i, p in enumerate(check.psnr)],
        "",
        f"Shift: dy = {check.shift_y:+.3f}, dx = {check.shift_x:+.3f} input pixels.",
    ]
    if quicklook:
        encoded = base64.b64encode(Path(quicklook).read_bytes()).decode()
        lines += ["", f"Quicklook (input | output): `{quicklook}`", "", f"![quicklook](data:image/png;base64,{encoded})"]
    create_markdown_artifact("\n".join(lines), key="sr-geo-scene-report", description="sr-geo run report")
    return summary


@dataclass
class Run:
    """One flow run from its plan on: the request, the resolved settings and the seconds per stage."""

    destination: str
    spec: ModelSpec
    options: InferenceOptions
    config: Config
    workdir: str
    seconds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def start(cls, destination: str, model: str, scale: int, weights: str | None, uncertainty: bool,
              consistent: bool, sensor_mtf: float | None, settings: dict) -> Run:
        """`settings`: `sr_geo.config.Config` fields given to the flow; the rest come from where it runs."""
        config = load_config(**settings)
        workdir = config.workdir or storage.join(storage.parent(destination), ".sr-geo-work")
        spec = ModelSpec(model, scale, weights)  # validates the name
        options = InferenceOptions.requested(uncertainty, consistent, ARCHITECTURES[spec.name].temporal, spec.name,
                                             sensor_mtf)
        return cls(destination, spec, options, config, workdir)

    def timed(self, stage: str, fn, *args):
        start = time.perf_counter()
        result = fn(*args)
        self.seconds[stage] = time.perf_counter() - start
        return result

    def finish(self, store_url: str, source: str, device: str, quicklook: str | None, keep_store: bool,
               **details) -> dict:
        """Infer, export, report against `source` (the raster whose grid the output takes) and clean up;
        returns the run summary, with `details` (what the flow adds about its input) in it."""
        inferred = self.timed("infer", infer, store_url, self.spec, self.config, device)
        layers = self.timed("export", export, store_url, self.destination, self.workdir,
                            self.config.compression)
        plan = TileStore.open(store_url, mode="r").plan
        scale = self.spec.scale
        if quicklook:
            write_quicklook(source, self.destination, scale, quicklook)
        working = sum(self.seconds.values()) - inferred["startup_seconds"]
        megapixels = plan.output_shape[0] * plan.output_shape[1] / 1e6
        summary = {
            "source": source, "destination": self.destination, "model": self.spec.name, "scale": scale, **details,
            "tiles": plan.n_tiles, "tiles_inferred": inferred["tiles"], "startup_seconds": inferred["startup_seconds"],
            "pool": inferred["pool"], "hardware": inferred["hardware"], "halo": plan.halo, "store": store_url,
            "layers": layers,
            "seconds": self.seconds, "output_megapixels": megapixels, "megapixels_per_second": megapixels / working,
        }
        summary = report(source, self.destination, scale, summary, quicklook)
        if not keep_store:
            storage.remove_tree(store_url)
            if self.config.workdir is None and not storage.is_remote(self.workdir) and not any(
                    Path(self.workdir).iterdir()):
                Path(self.workdir).rmdir()  # leave nothing beside the output but the output
        return summary
