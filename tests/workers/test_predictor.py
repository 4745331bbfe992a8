"""Predictor actors on a real local Ray: pool sizing, gang placement, and surviving a killed actor process."""

from __future__ import annotations

import os
import signal
import threading
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from sr_geo.config import Config
from sr_geo.errors import InvalidRequestError
from sr_geo.inference import Normalisation, predict_whole
from sr_geo.models.registry import ModelSpec, build_model
from sr_geo.plan import plan_tiles
from sr_geo.scene import inspect_scene
from sr_geo.store import RunKey, TileStore
from sr_geo.tiler import tile_scene
from workers.predictor import PoolConfig, run_pool, size_pool

NODE_MEMORY = 16 * 2**30


@pytest.mark.parametrize(("config", "device", "cluster", "expected"), [
    # (cpus, CPUs of the largest node, gpus) → (actors, threads, gpus_per_actor, device)
    (Config(), "auto", (2, 2, 0), (1, 2, 0.0, "cpu")),
    (Config(), "auto", (16, 16, 0), (1, 16, 0.0, "cpu")),  # one actor with all threads beats many small ones
    (Config(), "auto", (32, 16, 0), (2, 16, 0.0, "cpu")),  # one actor per node's worth of threads
    (Config(), "auto", (2, 1, 0), (2, 1, 0.0, "cpu")),  # two 1-CPU nodes: a 2-thread actor could never be placed
    (Config(actors=2), "auto", (2, 2, 0), (2, 1, 0.0, "cpu")),  # the CPUs shared between the actors
    (Config(actors=2, threads=2), "auto", (8, 8, 0), (2, 2, 0.0, "cpu")),
    (Config(gpus_per_actor=0.5), "auto", (2, 2, 0), (1, 2, 0.0, "cpu")),  # no GPU: no share asked of Ray
    (Config(), "auto", (16, 8, 2), (2, 8, 1.0, "cuda")),
    (Config(), "auto", (16, 16, 2), (2, 8, 1.0, "cuda")),
    (Config(gpus_per_actor=0.5), "auto", (16, 8, 2), (4, 4, 0.5, "cuda")),  # two actors on each GPU
    (Config(gpus_per_actor=0.3), "auto", (16, 16, 1), (3, 5, 0.3, "cuda")),
    (Config(actors=1, threads=3, batch_size=8), "cuda", (16, 16, 2), (1, 3, 1.0, "cuda")),
    (Config(gpus_per_actor=0.5), "cpu", (16, 8, 2), (2, 8, 0.0, "cpu")),  # --device cpu keeps off the GPUs
    (Config(), "cpu", (4, 4, 2), (1, 4, 0.0, "cpu")),
])
def test_settings_fix_the_pool_and_the_cluster_sizes_the_rest(config, device, cluster, expected):
    pool = size_pool(config, device, *cluster, NODE_MEMORY)
    assert (pool.actors, pool.threads, pool.gpus_per_actor, pool.device) == expected
    assert (pool.batch_size, pool.placement_timeout) == (config.batch_size, config.placement_timeout)


@pytest.mark.parametrize(("config", "device", "cluster", "precision"), [
    (Config(), "auto", (2, 2, 0), "float32"),  # auto: float32 on CPUs
    (Config(), "auto", (16, 8, 2), "bfloat16"),  # and bfloat16 on GPUs
    (Config(precision="float32"), "auto", (16, 8, 2), "float32"),
    (Config(precision="bfloat16"), "cpu", (16, 8, 2), "bfloat16"),  # a CPU with AMX or AVX-512 BF16
])
def test_the_precision_follows_the_setting_and_auto_the_device(config, device, cluster, precision):
    assert size_pool(config, device, *cluster, NODE_MEMORY).precision == precision


@pytest.mark.parametrize(("config", "cluster", "host_gib"), [
    (Config(), (2, 2, 0), 16.0),  # one actor: all of Ray's memory on the node
    (Config(actors=2), (2, 2, 0), 8.0),  # two 1-thread actors share the node
    (Config(), (32, 16, 0), 16.0),  # two 16-thread actors on two nodes: one per node
    (Config(actors=4, threads=2), (8, 8, 0), 4.0),
])
def test_cpu_actors_share_the_nodes_memory(config, cluster, host_gib):
    assert size_pool(config, "auto", *cluster, NODE_MEMORY).host_memory == host_gib * 2**30


def _tiled_store(make_raster, tmp_path: Path, name: str, spec: ModelSpec, size: int = 48, tile: int = 16):
    source = make_raster(size, size, bands=2, dtype="float32", seed=7)
    model = build_model(spec, 2)
    scene = inspect_scene(str(source))
    plan = plan_tiles(size, size, tile=tile, halo=model.receptive_radius, scale=spec.scale)
    key = RunKey(str(source), scene.size_bytes, scene.mtime, spec.name, "test", spec.scale, tile, plan.halo)
    url = str(tmp_path / f"{name}.zarr")
    store = TileStore.create(url, scene=scene, plan=plan, key=key, model_attrs={"name": spec.name})
    tile_scene(url, str(source), workers=1)
    return source, url, store, plan


@pytest.mark.usefixtures("ray_cluster")
def test_concurrent_pools_each_take_the_whole_cluster_in_turn(make_raster, tmp_path):
    """Two scenes at once, each wanting 2 one-CPU actors on a 2-CPU cluster: actors started one by one
    could leave each scene holding one actor and waiting forever for its second; placed as a gang, one
    pool runs, then the other."""
    spec = ModelSpec("bicubic", 2, None)
    stores = [_tiled_store(make_raster, tmp_path, f"scene{i}", spec) for i in range(2)]
    pool = PoolConfig(actors=2, threads=1, batch_size=1, device="cpu", placement_timeout=5)
    runs: list = []
    threads = [threading.Thread(target=lambda u=url, p=plan: runs.append(run_pool(u, list(range(p.n_tiles)), spec,
                                                                                   2, pool)))
               for _, url, _, plan in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert not any(thread.is_alive() for thread in threads), "the pools deadlocked"
    assert sorted(run.tiles for run in runs) == [plan.n_tiles for *_, plan in stores]
    assert all(store.pending("done") == [] for _, _, store, _ in stores)


@pytest.mark.usefixtures("ray_cluster")
def test_a_tile_larger_than_an_actors_memory_is_refused_before_any_tile_runs(make_raster, tmp_path):
    """The actor checks its tiles against its own memory (on a GPU only it knows the device's), and the
    refusal reaches the caller as the library's one-line error, not as Ray's remote traceback."""
    spec = ModelSpec("cnn", 2, None)
    _, url, store, plan = _tiled_store(make_raster, tmp_path, "scene", spec)
    pool = PoolConfig(actors=1, threads=1, device="cpu", host_memory=2**20)  # 1 MiB for a 16² + halo tile
    with pytest.raises(InvalidRequestError, match=r"more than the 0\.0 GiB an actor has: lower --halo") as info:
        run_pool(url, list(range(plan.n_tiles)), spec, 2, pool)
    assert "\n" not in str(info.value)
    assert len(store.pending("done")) == plan.n_tiles
    assert run_pool(url, list(range(plan.n_tiles)), spec, 2, replace(pool, host_memory=2**30)).tiles == plan.n_tiles


@pytest.mark.usefixtures("ray_cluster")
def test_a_pool_the_cluster_cannot_hold_fails_with_one_clear_line(make_raster, tmp_path):
    spec = ModelSpec("bicubic", 2, None)
    _, url, store, plan = _tiled_store(make_raster, tmp_path, "scene", spec)
    pool = PoolConfig(actors=3, threads=1, batch_size=1, device="cpu", placement_timeout=1)
    start = time.monotonic()
    with pytest.raises(InvalidRequestError, match=r"cannot hold 3 predictor actors of 1 CPU each \(it has 2 CPU"):
        run_pool(url, list(range(plan.n_tiles)), spec, 2, pool)
    assert time.monotonic() - start < 30
    assert len(store.pending("done")) == plan.n_tiles
    # the reservation was released: a pool that fits runs at once
    assert run_pool(url, list(range(plan.n_tiles)), spec, 2, replace(pool, actors=2)).tiles == plan.n_tiles


def _parent(pid: int) -> int:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def _our_actor_processes() -> list[int]:
    """PIDs of predictor actors descending from this process (our private Ray), never anyone else's."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if b"ray::PredictorActor" not in (entry / "cmdline").read_bytes():
                continue
            pid = ancestor = int(entry.name)
            while ancestor > 1 and ancestor != os.getpid():
                ancestor = _parent(ancestor)
            if ancestor == os.getpid():
                found.append(pid)
        except (FileNotFoundError, ProcessLookupError, ValueError):
            continue
    return found


def _kill_one_actor_when(store: TileStore, done_at_least: int, killed: list[int]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if int((store.group["done"][:] > 0).sum()) >= done_at_least:
            for pid in _our_actor_processes()[:1]:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
        time.sleep(0.02)


@pytest.mark.slow
@pytest.mark.usefixtures("ray_cluster")
def test_pool_survives_a_killed_actor_process(make_raster, random_cnn_weights, tmp_path):
    """SIGKILL the actor mid-inference: Ray restarts it, retries the batch, and the output is exact."""
    spec = ModelSpec("cnn", 2, str(random_cnn_weights(scale=2)))
    source, url, store, plan = _tiled_store(make_raster, tmp_path, "store", spec, size=96)
    model = build_model(spec, 2)

    killed: list[int] = []
    killer = threading.Thread(target=_kill_one_actor_when, args=(store, 6, killed))
    killer.start()
    pool = PoolConfig(actors=1, threads=1, batch_size=1, device="cpu")
    run_pool(url, list(range(plan.n_tiles)), spec, 2, pool)
    killer.join()

    assert killed, "no actor was killed: the test did not exercise a crash"
    assert store.pending("done") == []
    with rasterio.open(source) as ds:
        reference = predict_whole(model, ds.read(), ds.dataset_mask() > 0, plan.halo,
                                  Normalisation(*store.band_statistics()), torch.device("cpu"))
    assert np.abs(store.group["output"][:] - reference).max() <= 1e-4
