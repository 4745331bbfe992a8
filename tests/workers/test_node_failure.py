"""Crash the second node of a real local cluster while its predictor actor holds work: Ray restarts the
actor on the head, the lost batches are redone there, and the output equals a clean run's bit for bit.

(A killed actor process is covered by test_predictor.py, a killed flow process by test_cli.py.)
"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import write_raster, smooth_texture
from sr_geo.models.registry import ModelSpec, build_model
from sr_geo.plan import plan_tiles
from sr_geo.scene import inspect_scene
from sr_geo.store import RunKey, TileStore
from sr_geo.tiler import tile_scene
from test_job import REPO, RayNodes

# The driver runs in its own process: this pytest process may hold a private Ray of its own.
DRIVER = """
import os, sys, threading, time
import ray, torch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sr_geo.inference import TilePredictor
from sr_geo.models.registry import ModelSpec, build_model
from sr_geo.store import TileStore
from workers.predictor import PoolConfig, run_pool

address, store, clean, weights, release = sys.argv[1:]
spec, ids = ModelSpec("cnn", 2, weights), list(range(TileStore.open(store, mode="r").plan.n_tiles))
ray.init(address=address, log_to_driver=False)

@ray.remote(num_cpus=1)
class Holder:
    def ready(self):
        return True

# Hold the head's only CPU, so the predictor actor can start on the second node only.
head = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)
holder = Holder.options(scheduling_strategy=head).remote()
ray.get(holder.ready.remote())

def free_head_when_told():
    while not os.path.exists(release):
        time.sleep(0.05)
    ray.kill(holder)

threading.Thread(target=free_head_when_told, daemon=True).start()
run_pool(store, ids, spec, 2, PoolConfig(actors=1, threads=1, batch_size=1, device="cpu"))
torch.set_num_threads(1)
predictor = TilePredictor(clean, build_model(spec, 2), torch.device("cpu"))
for tile_id in ids:
    predictor.predict([tile_id])
"""


def _tiled_store(url: str, source, spec: ModelSpec) -> TileStore:
    scene = inspect_scene(str(source))
    halo = build_model(spec, scene.count).receptive_radius
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=16, halo=halo, scale=2)
    key = RunKey(str(source), scene.size_bytes, scene.mtime, "cnn", "test", 2, 16, halo)
    store = TileStore.create(url, scene=scene, plan=plan, key=key, model_attrs={"name": "cnn"})
    tile_scene(url, str(source), workers=2)
    return store


def _done(store: TileStore) -> int:
    return int((store.group["done"][:] > 0).sum())


@pytest.mark.slow
def test_crashed_node_work_is_redone_elsewhere_with_identical_output(random_cnn_weights, tmp_path):
    source = write_raster(tmp_path / "scene.tif", (smooth_texture((2, 128, 128), 11) * 255).astype("float32"))
    spec = ModelSpec("cnn", 2, str(random_cnn_weights(scale=2)))
    store = _tiled_store(str(tmp_path / "store.zarr"), source, spec)
    clean = _tiled_store(str(tmp_path / "clean.zarr"), source, spec)
    n_tiles, release = store.plan.n_tiles, tmp_path / "release-head"

    cluster = RayNodes()
    try:
        cluster.start_head(num_cpus=1)
        second = cluster.add_node(num_cpus=1)
        driver = subprocess.Popen(
            [sys.executable, "-c", DRIVER, cluster.address, str(tmp_path / "store.zarr"), str(tmp_path / "clean.zarr"),
             spec.weights, str(release)],
            cwd=REPO, env=cluster.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            deadline = time.monotonic() + 120
            while _done(store) < 4:
                assert driver.poll() is None and time.monotonic() < deadline, driver.stdout.read()[-3000:]
                time.sleep(0.02)
            done_before_crash = _done(store)
            cluster.crash(second)
            release.touch()
            output, _ = driver.communicate(timeout=180)
        finally:
            if driver.poll() is None:
                driver.kill()
                driver.wait()
        assert driver.returncode == 0, output[-3000:] + cluster.logs()
        assert done_before_crash < n_tiles, "the node finished before it was crashed"
        assert len(cluster.alive_nodes()) == 1
    finally:
        cluster.stop()
    assert store.pending("done") == []
    np.testing.assert_array_equal(store.group["output"][:], clean.group["output"][:])
