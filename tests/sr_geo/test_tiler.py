from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.env import get_gdal_config

from conftest import write_raster
from sr_geo.plan import BORDER, plan_tiles
from sr_geo.scene import inspect_scene
from sr_geo.store import RunKey, TileStore
from sr_geo.tiler import block_rows_bytes, tile_scene

MODEL_ATTRS = {"name": "bicubic", "weights_sha256": "none", "receptive_radius": 2}


def create_store(path: Path, url: Path, *, tile: int, halo: int, scale: int = 2) -> TileStore:
    scene = inspect_scene(str(path))
    plan = plan_tiles(scene.grid.height, scene.grid.width, tile=tile, halo=halo, scale=scale)
    key = RunKey(scene.path, scene.size_bytes, scene.mtime, "bicubic", "none", scale, tile, halo)
    return TileStore.create(str(url), scene=scene, plan=plan, key=key, model_attrs=MODEL_ATTRS)


def read_raster(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with rasterio.open(path) as ds:
        return ds.read(), ds.dataset_mask() > 0


def assert_regions_match_padded_raster(store: TileStore, data: np.ndarray, valid: np.ndarray) -> dict[str, int]:
    """Every stored region equals np.pad(raster, halo, BORDER) cropped to it (inside the halo band).

    Returns how many interior and edge tiles were checked, so callers can insist on both kinds.
    """
    plan = store.plan
    halo, (height, width) = plan.halo, (plan.height, plan.width)
    padded = np.pad(data, ((0, 0), (halo, halo), (halo, halo)), mode=BORDER)
    padded_valid = np.pad(valid, halo, mode=BORDER)
    pixels, validity = store.read_inputs(list(range(plan.n_tiles)))
    assert pixels.shape == (plan.n_tiles, 1, data.shape[0], *plan.region_shape)
    assert pixels.dtype == data.dtype
    kinds = {"interior": 0, "edge": 0}
    for t in plan.tiles():
        r0, c0 = int(t.region.row_off), int(t.region.col_off)
        rh, rw = plan.region_shape
        # The region may reach past the halo band for the last row/column (edge padding to tile
        # size); only the halo band is defined by the padded raster, the rest never reaches a core.
        lo_r, hi_r = max(r0, -halo), min(r0 + rh, height + halo)
        lo_c, hi_c = max(c0, -halo), min(c0 + rw, width + halo)
        got = pixels[t.id, 0, :, lo_r - r0 : hi_r - r0, lo_c - c0 : hi_c - c0]
        want = padded[:, lo_r + halo : hi_r + halo, lo_c + halo : hi_c + halo]
        np.testing.assert_array_equal(got, want, err_msg=f"tile {t.id}")
        np.testing.assert_array_equal(
            validity[t.id, 0, lo_r - r0 : hi_r - r0, lo_c - c0 : hi_c - c0],
            padded_valid[lo_r + halo : hi_r + halo, lo_c + halo : hi_c + halo],
            err_msg=f"tile {t.id} validity",
        )
        inside = r0 >= 0 and c0 >= 0 and r0 + rh <= height and c0 + rw <= width
        kinds["interior" if inside else "edge"] += 1
    return kinds


@pytest.mark.parametrize(
    ("height", "width", "tile", "halo"),
    [(100, 130, 32, 5), (97, 61, 24, 0), (70, 83, 16, 20), (1, 1, 64, 3), (5, 300, 64, 7), (40, 50, 64, 4)],
)
def test_stored_regions_are_the_mirrored_raster(make_raster, tmp_path: Path, height, width, tile, halo) -> None:
    mask = np.ones((height, width), dtype=bool)
    mask[height // 3 : height // 2, width // 4 : width // 3 + 1] = False
    path = make_raster(height, width, bands=2, mask=mask)
    store = create_store(path, tmp_path / "run.zarr", tile=tile, halo=halo)
    seen: list[int] = []
    assert tile_scene(str(tmp_path / "run.zarr"), str(path), workers=2, on_tile=seen.append) == store.plan.n_tiles
    assert sorted(seen) == list(range(store.plan.n_tiles))
    data, valid = read_raster(path)
    kinds = assert_regions_match_padded_raster(TileStore.open(str(tmp_path / "run.zarr")), data, valid)
    if height > tile + 2 * halo and width > tile + 2 * halo and store.plan.n_tiles >= 9:
        assert kinds["interior"] >= 1 and kinds["edge"] >= 1
    assert store.pending("tiled") == []
    assert (store.group["tiled"][:] == 1).all()
    assert store.pending("done") == list(range(store.plan.n_tiles))


def test_interior_tile_is_a_plain_window_read(make_raster, tmp_path: Path) -> None:
    path = make_raster(96, 96, bands=3)
    store = create_store(path, tmp_path / "run.zarr", tile=32, halo=6)
    tile_scene(str(tmp_path / "run.zarr"), str(path), workers=2)
    data, _ = read_raster(path)
    centre = store.plan.tile(4)  # row 1, col 1 of a 3 × 3 grid: its region lies inside the raster
    pixels, valid = store.read_inputs([4])
    np.testing.assert_array_equal(pixels[0, 0], data[:, 26:70, 26:70])
    assert valid.all()
    assert (int(centre.region.row_off), int(centre.region.col_off)) == (26, 26)


def test_core_statistics_sum_to_exact_band_mean_and_std_of_valid_pixels(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    data = rng.integers(0, 4000, size=(3, 77, 91)).astype("uint16")
    data[1] += 20000  # bands with different means
    data[:, 10:20, 30:60] = 0  # nodata block ...
    data[2, 50, 50] = 0  # ... and a pixel that is nodata in one band only (valid: another band has data)
    path = write_raster(tmp_path / "scene.tif", data, nodata=0)
    store = create_store(path, tmp_path / "run.zarr", tile=20, halo=4)
    tile_scene(str(tmp_path / "run.zarr"), str(path), workers=2)
    _, valid = read_raster(path)
    values = data[:, valid].astype(np.float64)
    mean, std = store.band_statistics()
    np.testing.assert_allclose(mean, values.mean(axis=1), rtol=1e-12)
    np.testing.assert_allclose(std, values.std(axis=1), rtol=1e-9)
    assert store.valid_pixel_count() == int(valid.sum())
    stats = store.group["stats"][:]
    assert stats.shape == (store.plan.n_tiles, 1, 3, 3)
    np.testing.assert_array_equal(stats[:, 0, :, 0].sum(axis=0), valid.sum())
    np.testing.assert_allclose(stats[:, 0, :, 2].sum(axis=0), (values**2).sum(axis=1), rtol=1e-12)


def test_rerun_tiles_nothing_and_resume_tiles_only_the_missing(make_raster, tmp_path: Path) -> None:
    path = make_raster(64, 80, bands=2)
    url = str(tmp_path / "run.zarr")
    store = create_store(path, tmp_path / "run.zarr", tile=16, halo=2)
    n = store.plan.n_tiles
    assert tile_scene(url, str(path), workers=2) == n
    before = store.group["input"][:]
    seen: list[int] = []
    assert tile_scene(url, str(path), workers=2, on_tile=seen.append) == 0
    assert seen == []
    # Lose two tiles (marker unset, data wiped, as after a crash before the marker was written).
    for tile_id in (3, n - 1):
        store.group["tiled"][tile_id] = 0
        store.group["input"][tile_id] = 0
    assert tile_scene(url, str(path), workers=2, on_tile=seen.append) == 2
    assert sorted(seen) == [3, n - 1]
    np.testing.assert_array_equal(store.group["input"][:], before)


def test_tiling_reads_the_file_as_it_is_now(tmp_path: Path) -> None:
    """A raster rewritten at the same path (new run key, new store) is tiled from its new content.

    Tiling threads keep datasets open between tiles; a handle left open from an earlier run must not
    serve the old pixels of a file that was replaced since.
    """
    path = tmp_path / "scene.tif"
    for run, value in enumerate((100, 200, 300)):
        write_raster(path, np.full((1, 40, 40), value, dtype="uint16"))
        url = tmp_path / f"run{run}.zarr"
        create_store(path, url, tile=16, halo=2)
        tile_scene(str(url), str(path), workers=2)
        pixels, _ = TileStore.open(str(url)).read_inputs(list(range(9)))
        assert np.unique(pixels).tolist() == [value], f"run {run}"


def test_tiling_reserves_the_block_rows_it_revisits_and_gives_them_back(tmp_path: Path) -> None:
    """GDAL's cache holds the block rows a tile row spans plus two while tiling, then shrinks back."""
    data = np.arange(3 * 100 * 90, dtype="uint16").reshape(3, 100, 90)
    path = write_raster(tmp_path / "scene.tif", data, tiled=True, blockxsize=32, blockysize=16)
    store = create_store(path, tmp_path / "run.zarr", tile=20, halo=4)  # regions of 28 rows: 2 block rows
    need = block_rows_bytes(str(path), 28)
    assert need == (2 + 2) * 16 * 90 * 3 * 2
    base = get_gdal_config("GDAL_CACHEMAX")
    seen: set[int] = set()
    tile_scene(str(tmp_path / "run.zarr"), str(path), workers=2,
               on_tile=lambda _: seen.add(get_gdal_config("GDAL_CACHEMAX")))
    assert seen == {base + need}
    assert get_gdal_config("GDAL_CACHEMAX") == base
    assert_regions_match_padded_raster(store, data, np.ones((100, 90), dtype=bool))
