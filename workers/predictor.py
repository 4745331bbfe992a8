"""Predictor actors and the pool that feeds them tile ids.

Each actor loads its model once (on a GPU when Ray gives it one) and works on batches of tile ids:
it reads those tiles from the store, runs the model and writes the output chunks itself. The driver
sends only ids and receives only ids. Ray restarts a crashed actor and retries its batch, which is
safe because a batch rewrites exactly the chunks it owns.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
import torch
from ray.util import ActorPool

from sr_geo.inference import REFERENCE_BANDS, TilePredictor, choose_device
from sr_geo.models.registry import ModelSpec, build_model


@dataclass(frozen=True)
class PoolConfig:
    """How much of the cluster inference uses: actors, CPU threads and GPUs (fractional) per actor."""

    actors: int = 1
    threads: int = 1
    gpus_per_actor: float = 0.0
    batch_size: int = 4  # tiles per call to an actor; its model calls hold at most batch_size 4-band tiles
    device: str = "auto"


@dataclass(frozen=True)
class PoolRun:
    """What a pool run did: tiles processed, and seconds spent starting actors and loading models."""

    tiles: int
    startup_seconds: float


# Two batches in flight per actor (a threaded actor listed twice in the pool): one in the model,
# the other being read or written, so store I/O overlaps inference.
IN_FLIGHT = 2


@ray.remote(max_restarts=3, max_task_retries=3, max_concurrency=IN_FLIGHT)
class PredictorActor:
    def __init__(self, store_url: str, spec: ModelSpec, bands: int, device: str, threads: int, batch_size: int,
                 storage_options: dict | None) -> None:
        torch.set_num_threads(threads)
        self.predictor = TilePredictor(store_url, build_model(spec, bands), choose_device(device), storage_options,
                                       band_images=batch_size * REFERENCE_BANDS)

    def ready(self) -> bool:
        """Returns once the model is loaded: lets the driver time start-up apart from inference."""
        return True

    def predict(self, tile_ids: list[int]) -> list[int]:
        return self.predictor.predict(tile_ids)


def default_pool(cpus: int, gpus: int, batch_size: int, device: str = "auto", node_cpus: int | None = None) -> PoolConfig:
    """One actor per GPU when there are GPUs; otherwise one actor per node's worth of CPU threads.

    On CPU one actor with all of a node's threads beats several single-threaded ones: torch
    parallelises the convolutions, and another model copy would only add memory. An actor never
    asks for more CPUs than the largest node has, or it could never be scheduled.
    """
    node = min(node_cpus or cpus, cpus)
    if gpus and device in ("auto", "cuda"):
        threads = max(1, min(node, cpus // gpus))
        return PoolConfig(actors=gpus, threads=threads, gpus_per_actor=1.0, batch_size=batch_size, device="cuda")
    return PoolConfig(actors=max(1, cpus // max(node, 1)), threads=max(1, node), batch_size=batch_size,
                      device="cpu" if device == "auto" else device)


def run_pool(
    store_url: str,
    tile_ids: list[int],
    spec: ModelSpec,
    bands: int,
    pool: PoolConfig,
    *,
    storage_options: dict | None = None,
    on_batch: Callable[[list[int]], None] | None = None,
) -> PoolRun:
    """Run every id in `tile_ids` through a pool of predictor actors."""
    if not tile_ids:
        return PoolRun(tiles=0, startup_seconds=0.0)
    start = time.perf_counter()
    actors = [
        PredictorActor.options(num_cpus=pool.threads, num_gpus=pool.gpus_per_actor).remote(
            store_url, spec, bands, pool.device, pool.threads, pool.batch_size, storage_options
        )
        for _ in range(pool.actors)
    ]
    batches = [tile_ids[i : i + pool.batch_size] for i in range(0, len(tile_ids), pool.batch_size)]
    done = 0
    try:
        ray.get([actor.ready.remote() for actor in actors])
        startup = time.perf_counter() - start
        for finished in ActorPool(actors * IN_FLIGHT).map_unordered(lambda actor, ids: actor.predict.remote(ids), batches):
            done += len(finished)
            if on_batch is not None:
                on_batch(finished)
    finally:
        for actor in actors:
            ray.kill(actor)
    return PoolRun(tiles=done, startup_seconds=startup)
