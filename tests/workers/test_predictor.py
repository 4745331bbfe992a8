"""Predictor actors on a real local Ray: pool sizing, and surviving a killed actor process."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch

from sr_geo.inference import Normalisation, predict_whole
from sr_geo.models.registry import ModelSpec, build_model
from sr_geo.plan import plan_tiles
from sr_geo.scene import inspect_scene
from sr_geo.store import RunKey, TileStore
from sr_geo.tiler import tile_scene
from workers.predictor import PoolConfig, default_pool, run_pool


def test_default_pool_uses_all_cpus_in_one_actor_or_one_actor_per_gpu():
    assert default_pool(cpus=16, gpus=0, batch_size=8) == PoolConfig(actors=1, threads=16, batch_size=8, device="cpu")
    # two 1-CPU nodes: an actor asking for both CPUs could never be placed
    assert default_pool(cpus=2, gpus=0, batch_size=8, node_cpus=1) == PoolConfig(actors=2, threads=1, batch_size=8,
                                                                                   device="cpu")
    gpu = default_pool(cpus=16, gpus=2, batch_size=8)
    assert (gpu.actors, gpu.threads, gpu.gpus_per_actor, gpu.device) == (2, 8, 1.0, "cuda")
    assert default_pool(cpus=4, gpus=2, batch_size=8, device="cpu").actors == 1


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
    source = make_raster(96, 96, bands=2, dtype="float32", seed=7)
    spec = ModelSpec("cnn", 2, str(random_cnn_weights(scale=2)))
    model = build_model(spec, 2)
    scene = inspect_scene(str(source))
    plan = plan_tiles(96, 96, tile=16, halo=model.receptive_radius, scale=2)
    key = RunKey(str(source), scene.size_bytes, scene.mtime, "cnn", "test", 2, 16, plan.halo)
    url = str(tmp_path / "store.zarr")
    store = TileStore.create(url, scene=scene, plan=plan, key=key, model_attrs={"name": "cnn"})
    tile_scene(url, str(source), workers=2)

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
