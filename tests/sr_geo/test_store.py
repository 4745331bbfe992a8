from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from sr_geo.plan import plan_tiles
from sr_geo.scene import inspect_scene
from sr_geo.store import FORMAT, RunKey, TileStore
from sr_geo.tiler import tile_scene

MODEL_ATTRS = {"name": "bicubic", "weights_sha256": "none", "receptive_radius": 2}


def run_key(scene, *, tile: int, halo: int, scale: int, model: str = "bicubic") -> RunKey:
    return RunKey(scene.path, scene.size_bytes, scene.mtime, model, "none", scale, tile, halo)


def create(path: Path, url: Path, *, tile: int = 16, halo: int = 3, scale: int = 2) -> TileStore:
    scene = inspect_scene(str(path))
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=tile, halo=halo, scale=scale)
    return TileStore.create(str(url), scene=scene, plan=plan, key=run_key(scene, tile=tile, halo=halo, scale=scale),
                            model_attrs=MODEL_ATTRS)


def test_create_lays_out_arrays_one_chunk_per_tile(make_raster, tmp_path: Path) -> None:
    path = make_raster(50, 70, bands=3, dtype="int16", nodata=-1)
    store = create(path, tmp_path / "run.zarr", tile=16, halo=3, scale=4)
    plan = store.plan
    assert (plan.rows, plan.cols, plan.n_tiles) == (4, 5, 20)
    g = store.group
    assert g["input"].shape == (20, 1, 3, 22, 22) and g["input"].chunks == (1, 1, 3, 22, 22)
    assert g["input"].dtype == np.dtype("int16")
    assert g["valid"].shape == (20, 1, 22, 22) and g["valid"].chunks == (1, 1, 22, 22)
    assert g["stats"].shape == (20, 1, 3, 3) and g["stats"].chunks == (1, 1, 3, 3)
    assert g["output"].shape == (3, 200, 280) and g["output"].chunks == (3, 64, 64)
    assert g["output"].dtype == np.dtype("float32") and np.isnan(g["output"].fill_value)
    for marker in ("tiled", "done"):
        assert g[marker].shape == (20,) and g[marker].chunks == (1,)
        assert store.pending(marker) == list(range(20))


def test_create_records_the_georeferencing_and_the_run(make_raster, tmp_path: Path) -> None:
    path = make_raster(50, 70, bands=2, nodata=0)
    scene = inspect_scene(str(path))
    store = create(path, tmp_path / "run.zarr", tile=16, halo=3, scale=4)
    attrs = TileStore.open(str(tmp_path / "run.zarr"), mode="r").attrs
    assert attrs["format"] == FORMAT
    assert attrs["run_key"] == run_key(scene, tile=16, halo=3, scale=4).digest()
    assert Affine(*attrs["transform"]) == scene.grid.transform
    assert Affine(*attrs["output_transform"]) == scene.grid.transform * Affine.scale(1 / 4)
    assert attrs["crs_wkt"] == scene.grid.crs
    assert attrs["band_names"] == ["band_1", "band_2"]
    assert attrs["nodata"] == 0 and attrs["dtype"] == "uint16"
    assert attrs["model"] == MODEL_ATTRS
    assert attrs["source"] == {"path": str(path), "size": scene.size_bytes, "mtime": scene.mtime}
    assert store.plan == plan_tiles(50, 70, tile=16, halo=3, scale=4)
    assert store.frames == 1


def test_run_key_digest_is_stable_and_sensitive() -> None:
    fields = ("/a.tif", 100, 1.5, "cnn", "abc", 4, 256, 20)
    key = RunKey(*fields)
    assert key.digest() == RunKey(*fields).digest()
    assert len(key.digest()) == 64
    others = ("/b.tif", 101, 1.6, "gan", "abd", 2, 128, 21)
    changed = [RunKey(*fields[:i], other, *fields[i + 1 :]) for i, other in enumerate(others)]
    assert len({key.digest(), *(k.digest() for k in changed)}) == 1 + len(fields)


def test_open_or_create_resumes_same_key_and_restarts_other_key(make_raster, tmp_path: Path) -> None:
    path = make_raster(40, 40, bands=1)
    scene = inspect_scene(str(path))
    url = str(tmp_path / "run.zarr")
    plan = plan_tiles(40, 40, tile=16, halo=2, scale=2)
    key = run_key(scene, tile=16, halo=2, scale=2)
    store = TileStore.open_or_create(url, key=key, scene=scene, plan=plan, model_attrs=MODEL_ATTRS)
    store.mark("tiled", 4)
    store.mark("done", 2)
    resumed = TileStore.open_or_create(url, key=key, scene=scene, plan=plan, model_attrs=MODEL_ATTRS)
    assert resumed.pending("tiled") == [i for i in range(9) if i != 4]
    assert resumed.pending("done") == [i for i in range(9) if i != 2]
    other = run_key(scene, tile=16, halo=2, scale=4)
    fresh = TileStore.open_or_create(url, key=other, scene=scene, plan=plan_tiles(40, 40, tile=16, halo=2, scale=4),
                                     model_attrs=MODEL_ATTRS)
    assert fresh.pending("tiled") == list(range(9)) and fresh.plan.scale == 4
    assert fresh.attrs["run_key"] == other.digest()


def test_open_or_create_restarts_an_aborted_create(make_raster, tmp_path: Path) -> None:
    """A store whose attributes were never written (killed during create) is not reused."""
    import zarr

    path = make_raster(20, 20, bands=1)
    scene = inspect_scene(str(path))
    url = str(tmp_path / "run.zarr")
    zarr.open_group(url, mode="w").create_array("input", shape=(1,), dtype="uint8")
    key = run_key(scene, tile=8, halo=0, scale=2)
    store = TileStore.open_or_create(url, key=key, scene=scene, plan=plan_tiles(20, 20, tile=8, halo=0, scale=2),
                                     model_attrs=MODEL_ATTRS)
    assert store.attrs["run_key"] == key.digest() and store.plan.n_tiles == 9


def test_write_output_places_the_core_in_its_own_chunk(make_raster, tmp_path: Path) -> None:
    path = make_raster(20, 30, bands=2)
    store = create(path, tmp_path / "run.zarr", tile=8, halo=2, scale=2)
    plan = store.plan
    for t in plan.tiles():
        h, w = int(t.core.height) * 2, int(t.core.width) * 2
        store.write_output(t, np.full((2, h, w), t.id, dtype=np.float32))
    out = store.group["output"][:]
    expected = np.zeros((40, 60), dtype=np.float32)
    for t in plan.tiles():
        r0, c0 = int(t.core.row_off) * 2, int(t.core.col_off) * 2
        expected[r0 : r0 + int(t.core.height) * 2, c0 : c0 + int(t.core.width) * 2] = t.id
    np.testing.assert_array_equal(out, np.broadcast_to(expected, (2, 40, 60)))


def _tile_these(store_url: str, source: str, tile_ids: list[int], barrier) -> None:
    """Child process: wait for the sibling, then tile `tile_ids` into the shared store."""
    barrier.wait(timeout=60)
    tile_scene(store_url, source, workers=1, tile_ids=tile_ids)


def test_two_processes_tiling_one_store_at_once_lose_nothing(make_raster, tmp_path: Path) -> None:
    path = make_raster(96, 112, bands=3, mask=np.pad(np.ones((90, 100), dtype=bool), ((3, 3), (6, 6))))
    url = str(tmp_path / "run.zarr")
    store = create(path, tmp_path / "run.zarr", tile=16, halo=4)
    n = store.plan.n_tiles
    assert n == 42
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(2)
    # Interleaved ids: neighbouring tiles (whose regions overlap in the input) go to different processes.
    children = [ctx.Process(target=_tile_these, args=(url, str(path), list(range(k, n, 2)), barrier)) for k in (0, 1)]
    for child in children:
        child.start()
    for child in children:
        child.join(timeout=120)
    assert [child.exitcode for child in children] == [0, 0]
    assert store.pending("tiled") == []
    # Every chunk written by either process is intact: compare with tiling the same plan in this process.
    reference_url = str(tmp_path / "reference.zarr")
    create(path, tmp_path / "reference.zarr", tile=16, halo=4)
    tile_scene(reference_url, str(path), workers=1)
    reference = TileStore.open(reference_url)
    for name in ("input", "valid", "stats"):
        np.testing.assert_array_equal(store.group[name][:], reference.group[name][:], err_msg=name)
    with rasterio.open(path) as ds:
        assert store.valid_pixel_count() == int((ds.dataset_mask() > 0).sum()) == 90 * 100


@pytest.mark.parametrize("marker", ["tiled", "done"])
def test_markers(make_raster, tmp_path: Path, marker: str) -> None:
    store = create(make_raster(20, 20, bands=1), tmp_path / "run.zarr", tile=8, halo=1)
    for tile_id in (0, 8, 5):
        store.mark(marker, tile_id)
    assert store.pending(marker) == [1, 2, 3, 4, 6, 7]
    other = "done" if marker == "tiled" else "tiled"
    assert store.pending(other) == list(range(9))


POOL_PROBE = """
import sys, threading, zarr
from sr_geo.store import TileStore
TileStore.open(sys.argv[1], mode="r").group["input"][:]  # 20 chunks read at once
pool = sum(thread.name.startswith(("zarr_pool", "asyncio_")) for thread in threading.enumerate())  # its, asyncio's
print(zarr.config.get("threading.max_workers"), pool)
"""


@pytest.mark.parametrize("configured", [None, "1"])
def test_zarrs_thread_pool_is_the_cores_unless_configured(make_raster, tmp_path: Path, configured) -> None:
    """Each pool thread keeps the chunk buffers it freed (a malloc arena of its own): zarr's default of
    cores + 4 made a process's memory depend on its pool, so the store sizes it to the cores."""
    create(make_raster(50, 70, bands=3), tmp_path / "run.zarr", tile=16)
    env = {k: v for k, v in os.environ.items() if k != "ZARR_THREADING__MAX_WORKERS"}
    if configured:
        env["ZARR_THREADING__MAX_WORKERS"] = configured
    done = subprocess.run([sys.executable, "-c", POOL_PROBE, str(tmp_path / "run.zarr")], env=env,
                          capture_output=True, text=True, timeout=120, check=True)
    workers, pool = map(int, done.stdout.split())
    assert workers == int(configured or os.cpu_count())
    assert 1 <= pool <= workers


def test_finished_tiles_of_another_precision_are_redone(make_raster, tmp_path: Path) -> None:
    store = create(make_raster(40, 40), tmp_path / "run.zarr", tile=16)  # 9 tiles
    for tile_id in (0, 4):
        store.mark("done", tile_id)
    assert store.claim_precision("float32") == 0  # a store from before the record keeps its tiles
    assert store.claim_precision("float32") == 0 and len(store.pending("done")) == 7
    assert store.claim_precision("bfloat16") == 2 and len(store.pending("done")) == 9
    assert TileStore.open(str(tmp_path / "run.zarr"), mode="r").attrs["precision"] == "bfloat16"
