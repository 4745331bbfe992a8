"""Predictor actors and the pool that feeds them tile ids.

Each actor loads its model once (on a GPU when Ray gives it one) and works on batches of tile ids:
it reads those tiles from the store, runs the model and writes the output chunks itself. The driver
sends only ids and receives only ids. Ray restarts a crashed actor and retries its batch, which is
safe because a batch rewrites exactly the chunks it owns. A pool's actors are placed as one gang (a
placement group): concurrent scenes never each hold part of the cluster while waiting for the rest.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import ray
from ray.util import ActorPool
from ray.util.placement_group import (
    PlacementGroup,
    placement_group,
    remove_placement_group,
)
from ray.util.scheduling_strategies import PlacementGroupSchedulingStrategy

from sr_geo.config import Config, resolve_precision
from sr_geo.errors import InvalidRequestError
from sr_geo.hardware import device_description
from sr_geo.memory import map_large_blocks
from sr_geo.models.registry import ModelSpec, build_model


@dataclass(frozen=True)
class PoolConfig:
    """How much of the cluster inference uses: actors, CPU threads and GPUs (fractional) per actor."""

    actors: int = 1
    threads: int = 1
    gpus_per_actor: float = 0.0
    batch_size: int = 4  # tiles per call to an actor; its model calls hold at most batch_size 4-band tiles
    host_memory: float = 0.0  # bytes of the node's memory for one CPU actor (0: unbounded)
    device: str = "auto"
    precision: str = "float32"  # the network's arithmetic on `device` (auto resolved by `size_pool`)
    placement_timeout: float = 600.0  # seconds a pool larger than every node layout waits for the cluster to grow

    @property
    def bundle(self) -> dict[str, float]:
        """What one actor reserves."""
        return {"CPU": self.threads, **({"GPU": self.gpus_per_actor} if self.gpus_per_actor else {})}


@dataclass(frozen=True)
class PoolRun:
    """What a pool run did: tiles processed, seconds spent starting actors and loading models, and what
    the actors ran on (`sr_geo.hardware.device_description`, each distinct one once)."""

    tiles: int
    startup_seconds: float
    hardware: tuple[str, ...] = ()


# Two batches in flight per actor (a threaded actor listed twice in the pool): one in the model,
# the other being read or written, so store I/O overlaps inference.
IN_FLIGHT = 2


@ray.remote(max_restarts=3, max_task_retries=3, max_concurrency=IN_FLIGHT)
class PredictorActor:
    def __init__(self, store_url: str, spec: ModelSpec, bands: int, pool: PoolConfig,
                 storage_options: dict | None) -> None:
        # torch loads here, in the actor: the driver hands out tile ids and never needs it.
        import torch

        from sr_geo.inference import TilePredictor, call_memory_budget, choose_device

        map_large_blocks()  # batch buffers of the same sizes, all life long: see sr_geo.memory
        torch.set_num_threads(pool.threads)
        device = choose_device(pool.device)
        budget = call_memory_budget(device, pool.host_memory, pool.gpus_per_actor)
        self.predictor = TilePredictor(store_url, build_model(spec, bands), device, storage_options,
                                       batch_size=pool.batch_size, memory_budget=budget or None,
                                       precision=pool.precision)

    def ready(self) -> str:
        """Returns what the model runs on, once it is loaded: lets the driver time start-up apart from
        inference. Refuses (`InvalidRequestError`) a tile larger than this actor's memory, CPU or GPU,
        before any tile runs."""
        self.predictor.check_tile_fits()
        return device_description(self.predictor.device)

    def predict(self, tile_ids: list[int]) -> list[int]:
        return self.predictor.predict(tile_ids)


def size_pool(config: Config, device: str, cpus: int, node_cpus: int, gpus: int, node_memory: float) -> PoolConfig:
    """The predictor actors a run uses: what the settings fix, the rest sized from what Ray has
    (`workers.cluster.cluster_resources`).

    Unset, actors follow the GPUs (one per GPU, or as many as `gpus_per_actor` shares allow); on CPU,
    one actor per node with all of its threads beats several single-threaded ones: torch parallelises
    the convolutions, and another model copy would only add memory. Threads share the cluster's CPUs
    between the actors and never exceed what a node has, or the actor could never be placed. A CPU
    actor gets Ray's memory on the node shared by the actors that fit there, of which its model calls
    take `sr_geo.inference.CALL_MEMORY_FRACTION`.
    """
    node_cpus = max(1, min(node_cpus, cpus))
    on_gpu = bool(gpus) and device in ("auto", "cuda")
    share = (config.gpus_per_actor or 1.0) if on_gpu else 0.0
    actors = config.actors or (max(1, int(gpus / share + 1e-9)) if on_gpu else max(1, cpus // node_cpus))
    threads = config.threads or max(1, min(node_cpus, cpus // actors))
    per_node = max(1, min(actors, node_cpus // threads))
    placed = "cuda" if on_gpu else ("cpu" if device == "auto" else device)
    return PoolConfig(actors=actors, threads=threads, gpus_per_actor=share, batch_size=config.batch_size,
                      host_memory=node_memory / per_node, device=placed,
                      precision=resolve_precision(placed, config.precision),
                      placement_timeout=config.placement_timeout)


def _capacity(bundle: dict[str, float]) -> int:
    """How many actors of `bundle` the cluster's alive nodes could hold when idle."""
    total = 0
    for node in ray.nodes():
        if node.get("Alive"):
            have = node["Resources"]
            total += min(int(have.get(name, 0) / need + 1e-9) for name, need in bundle.items())
    return total


def _wait_until_placed(group: PlacementGroup, pool: PoolConfig) -> None:
    """Wait while the cluster could hold the pool (it is busy with other scenes); fail once it has been
    too small for `placement_timeout` seconds (an autoscaler may add nodes meanwhile)."""
    too_small_since = None
    while not group.wait(timeout_seconds=min(5.0, max(pool.placement_timeout, 0.5))):
        if _capacity(pool.bundle) >= pool.actors:
            too_small_since = None
            continue
        too_small_since = too_small_since or time.monotonic()
        if time.monotonic() - too_small_since >= pool.placement_timeout:
            need = ", ".join(f"{amount:g} {name}" for name, amount in pool.bundle.items())
            have, nodes = ray.cluster_resources(), sum(bool(node.get("Alive")) for node in ray.nodes())
            raise InvalidRequestError(
                f"the Ray cluster cannot hold {pool.actors} predictor actors of {need} each (it has "
                f"{have.get('CPU', 0):g} CPU, {have.get('GPU', 0):g} GPU over {nodes} nodes): "
                "lower actors, threads or gpus_per_actor, or add nodes")


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
    """Run every id in `tile_ids` through a pool of predictor actors, placed together or not at all."""
    if not tile_ids:
        return PoolRun(tiles=0, startup_seconds=0.0)
    start = time.perf_counter()
    group = placement_group([pool.bundle] * pool.actors, strategy="PACK")
    actors = []
    batches = [tile_ids[i : i + pool.batch_size] for i in range(0, len(tile_ids), pool.batch_size)]
    done = 0
    try:
        _wait_until_placed(group, pool)
        actors = [
            PredictorActor.options(
                num_cpus=pool.threads, num_gpus=pool.gpus_per_actor,
                scheduling_strategy=PlacementGroupSchedulingStrategy(group, placement_group_bundle_index=i),
            ).remote(store_url, spec, bands, pool, storage_options)
            for i in range(pool.actors)
        ]
        try:
            hardware = tuple(sorted(set(ray.get([actor.ready.remote() for actor in actors]))))
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, InvalidRequestError):
                raise exc.cause from None  # a refusal, as one line: not Ray's remote traceback
            raise
        startup = time.perf_counter() - start
        for finished in ActorPool(actors * IN_FLIGHT).map_unordered(lambda actor, ids: actor.predict.remote(ids), batches):
            done += len(finished)
            if on_batch is not None:
                on_batch(finished)
    except SystemError as exc:
        # A signal handler that raises while Ray waits (SIGTERM from a scheduler or `kill`: SystemExit, or
        # the flow engine's termination signal) comes back as a SystemError with that exception as its
        # cause; re-raised as it is, the run stops instead of being retried as an ordinary failure.
        if isinstance(exc.__cause__, BaseException) and not isinstance(exc.__cause__, Exception):
            raise exc.__cause__ from None
        raise
    finally:
        for actor in actors:
            ray.kill(actor)
        remove_placement_group(group)
    return PoolRun(tiles=done, startup_seconds=startup, hardware=hardware)
