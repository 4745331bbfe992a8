"""COG export: values, masks, georeferencing, metadata, layout and atomicity, through the real pipeline
(inspect → plan → store → tile → predict, without Ray or Prefect)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import rasterio
import rasterio.shutil
from rasterio.crs import CRS
from rasterio.enums import MaskFlags

from conftest import UTM_CRS, UTM_TRANSFORM, predicted_store, smooth_texture, write_raster
from sr_geo import __version__
from sr_geo.config import COMPRESSIONS
from sr_geo.errors import InvalidRequestError
from sr_geo.export import export_cog, overview_factors, to_dtype
from sr_geo.store import TileStore


@dataclass
class Run:
    source: Path
    destination: Path
    url: str
    store: TileStore
    scratch: Path


def prepare(source: Path, work: Path, *, scale: int, tile: int, halo: int = 2, model: str = "bicubic") -> Run:
    """Everything before export: store created, tiled and predicted."""
    url = predicted_store(source, work, scale=scale, tile=tile, halo=halo, model=model)
    (work / "out").mkdir(exist_ok=True)
    (work / "scratch").mkdir(exist_ok=True)
    store = TileStore.open(url, mode="r")
    return Run(source, work / "out" / "sr.tif", url, store, work / "scratch")


def super_resolve(source: Path, work: Path, *, scale: int, tile: int, halo: int = 2) -> Run:
    run = prepare(source, work, scale=scale, tile=tile, halo=halo)
    assert export_cog(run.store, run.destination, run.scratch, threads=2) == run.destination
    return run


def upsample(mask: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(mask, scale, axis=0), scale, axis=1)


# -- the round trip, per data type and masking ------------------------------------------------------

SCALE = 4
HEIGHT, WIDTH = 140, 150  # ×4: 560 × 600 output, larger than one 512 block, so overviews are due
NODATA = {"uint8": 0, "uint16": 0, "int16": -32768, "float32": -9999.0}
DESCRIPTIONS = ("B04", "B03", "B02")
SCALES = (0.0001, 0.5, 1.0)
OFFSETS = (-0.1, 0.0, 3.0)


def source_pixels(dtype: str) -> tuple[np.ndarray, np.ndarray]:
    """Texture over the whole value range with a hard-edged max/min square (bicubic overshoots it,
    so the export has to clip), and a validity mask with a block and scattered single pixels."""
    texture = smooth_texture((3, HEIGHT, WIDTH), seed=11)
    if dtype == "float32":
        data = (1000 * texture).astype("float32")
    else:
        info = np.iinfo(dtype)  # valid pixels never hold the dtype minimum, the nodata value below
        data = np.rint(info.min + 1 + texture * (float(info.max) - info.min - 1)).astype(dtype)
        data[:, 60:80, 60:80] = info.min + 1
        data[:, 65:75, 65:75] = info.max
    valid = np.ones((HEIGHT, WIDTH), dtype=bool)
    valid[100:117, 20:43] = False
    rng = np.random.default_rng(5)
    valid[rng.integers(0, HEIGHT, 40), rng.integers(0, WIDTH, 40)] = False
    return data, valid


CASES = [(dtype, masking) for dtype in ("uint8", "uint16", "int16", "float32") for masking in ("nodata", "mask")]


@pytest.fixture(scope="module", params=CASES, ids=lambda case: "-".join(case))
def exported(request, tmp_path_factory) -> tuple[Run, str, str, np.ndarray, np.ndarray]:
    dtype, masking = request.param
    work = tmp_path_factory.mktemp(f"export-{dtype}-{masking}")
    data, valid = source_pixels(dtype)
    if masking == "nodata":
        data[:, ~valid] = NODATA[dtype]
        source = write_raster(work / "scene.tif", data, nodata=NODATA[dtype])
    else:
        source = write_raster(work / "scene.tif", data, mask=valid)
    with rasterio.open(source, "r+") as ds:
        ds.descriptions = DESCRIPTIONS
        ds.scales, ds.offsets = SCALES, OFFSETS
        ds.units = ("reflectance", "dn", "")
    return super_resolve(source, work, scale=SCALE, tile=64), dtype, masking, data, valid


def test_dtype_is_kept_and_values_are_rounded_and_clipped(exported) -> None:
    run, dtype, _, _, valid = exported
    raw = run.store.group["output"][:]  # float32 model output
    up = upsample(valid, SCALE)
    with rasterio.open(run.destination) as ds:
        assert ds.dtypes == (dtype,) * 3
        out = ds.read()
    if dtype == "float32":
        np.testing.assert_array_equal(out[:, up], raw[:, up])
        return
    info = np.iinfo(dtype)
    assert raw[:, up].max() > info.max and raw[:, up].min() < info.min  # the overshoot really needs clipping
    expected = np.clip(np.rint(raw), info.min, info.max)
    if run.store.attrs["nodata"] is not None:  # nodata is the dtype minimum: valid pixels move one up
        expected[expected == run.store.attrs["nodata"]] += 1
    np.testing.assert_array_equal(out[:, up], expected[:, up].astype(dtype))


def test_masked_pixels_are_masked_on_exactly_their_output_blocks(exported) -> None:
    run, dtype, masking, _, valid = exported
    up = upsample(valid, SCALE)
    with rasterio.open(run.destination) as ds:
        out = ds.read()
        dataset_mask = ds.dataset_mask() > 0
        if masking == "nodata":
            assert ds.nodata == NODATA[dtype]
            assert ds.mask_flag_enums == ([MaskFlags.nodata],) * 3
            assert (out[:, ~up] == NODATA[dtype]).all()
            assert not (out[:, up] == NODATA[dtype]).any()  # a valid pixel never reads as a hole
        else:
            assert ds.nodata is None
            assert ds.mask_flag_enums == ([MaskFlags.per_dataset],) * 3  # an internal mask, like the input
    np.testing.assert_array_equal(dataset_mask, up)


def test_georeferencing_is_the_input_grid_zoomed_in(exported) -> None:
    run, *_ = exported
    with rasterio.open(run.source) as src, rasterio.open(run.destination) as out:
        assert out.crs == src.crs == CRS.from_string(UTM_CRS)
        assert tuple(out.bounds) == tuple(src.bounds)
        assert out.res == (src.res[0] / SCALE, src.res[1] / SCALE)
        assert (out.height, out.width) == (HEIGHT * SCALE, WIDTH * SCALE)
        assert out.transform == UTM_TRANSFORM * UTM_TRANSFORM.scale(1 / SCALE)


def test_band_metadata_and_provenance_are_carried_over(exported) -> None:
    run, *_ = exported
    with rasterio.open(run.source) as src, rasterio.open(run.destination) as out:
        assert out.descriptions == DESCRIPTIONS
        assert out.scales == SCALES and out.offsets == OFFSETS
        assert out.units == src.units == ("reflectance", "dn", None)  # rasterio reads an empty unit as None
        assert out.colorinterp == src.colorinterp
        tags = out.tags()
    assert {k: v for k, v in tags.items() if k.startswith("SR_GEO_")} == {
        "SR_GEO_VERSION": __version__,
        "SR_GEO_MODEL": "bicubic",
        "SR_GEO_WEIGHTS_SHA256": "none",
        "SR_GEO_SCALE": str(SCALE),
        "SR_GEO_HALO": "2",
        "SR_GEO_TILE": "64x64",
        "SR_GEO_INFERENCE": "{}",
        "SR_GEO_SOURCE": "scene.tif",
        "SR_GEO_SOURCE_SIZE": str(os.path.getsize(run.source)),
        "SR_GEO_RUN_KEY": run.store.attrs["run_key"],
        "SR_GEO_LAYER": "super-resolved image",
    }


def test_output_is_a_cloud_optimized_geotiff_with_overviews(exported) -> None:
    run, *_ = exported
    with rasterio.open(run.destination) as ds:
        assert ds.driver == "GTiff"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.block_shapes == [(512, 512)] * 3
        assert ds.compression.name.upper() == "DEFLATE"
        overviews = ds.overviews(1)
        assert overviews and overviews[0] == 2  # 560 × 600 → one level, 280 × 300
        assert ds.overviews(1) == ds.overviews(2) == ds.overviews(3)
        # The first overview is the 2 × 2 average of the full resolution (where everything is valid).
        overview = ds.read(1, out_shape=(HEIGHT * SCALE // 2, WIDTH * SCALE // 2))
        full = ds.read(1).astype(np.float64)
    block = full[:40, -40:].reshape(20, 2, 20, 2).mean(axis=(1, 3))
    assert np.abs(overview[:20, -20:] - block).max() <= 1.0


def test_nothing_but_the_destination_is_left_behind(exported) -> None:
    run, *_ = exported
    assert sorted(p.name for p in run.destination.parent.iterdir()) == ["sr.tif"]
    assert list(run.scratch.iterdir()) == []


def test_float_with_nan_nodata_round_trips(tmp_path: Path) -> None:
    data = (1000 * smooth_texture((2, 50, 60), seed=2)).astype("float32")
    valid = np.ones((50, 60), dtype=bool)
    valid[10:20, 30:45] = False
    data[:, ~valid] = np.nan
    run = super_resolve(write_raster(tmp_path / "scene.tif", data, nodata=float("nan")), tmp_path, scale=2, tile=24)
    up = upsample(valid, 2)
    with rasterio.open(run.destination) as ds:
        assert ds.dtypes == ("float32", "float32") and np.isnan(ds.nodata)
        out = ds.read()
        np.testing.assert_array_equal(ds.dataset_mask() > 0, up)
    assert np.isnan(out[:, ~up]).all() and not np.isnan(out[:, up]).any()
    np.testing.assert_array_equal(out[:, up], run.store.group["output"][:][:, up])


# -- georeferencing: no half-pixel shift ------------------------------------------------------------


def weighted_centroid(ds: rasterio.DatasetReader, background: float) -> tuple[float, float]:
    """Map (x, y) of the background-subtracted intensity centroid of band 1, at pixel centres."""
    weight = ds.read(1).astype(np.float64) - background
    rows, cols = np.indices(weight.shape) + 0.5
    total = weight.sum()
    return ds.transform * ((cols * weight).sum() / total, (rows * weight).sum() / total)


@pytest.mark.parametrize("dtype", ["uint16", "float32"])
@pytest.mark.parametrize("scale", [2, 4])
def test_bright_square_stays_at_its_map_coordinates(tmp_path: Path, scale: int, dtype: str) -> None:
    data = np.full((1, 90, 110), 1000, dtype=dtype)
    data[:, 41:48, 57:63] = 9000  # straddles tile borders (tile 20): rows 40 and cols 60
    source = write_raster(tmp_path / "square.tif", data)
    # Where the square is, in map units: the centre of its pixel block.
    expected = UTM_TRANSFORM * ((57 + 63) / 2, (41 + 48) / 2)
    run = super_resolve(source, tmp_path, scale=scale, tile=20, halo=2)
    with rasterio.open(source) as src, rasterio.open(run.destination) as out:
        assert weighted_centroid(src, 1000) == pytest.approx(expected, abs=1e-6)
        x, y = weighted_centroid(out, 1000)
        assert out.overviews(1) == []  # 180 × 220 / 360 × 440: below one block, no overviews needed
    pixel = UTM_TRANSFORM.a
    assert abs(x - expected[0]) / pixel < 0.05
    assert abs(y - expected[1]) / pixel < 0.05


# -- atomicity: a failing export leaves nothing behind -----------------------------------------------


@pytest.fixture
def ready(make_raster, tmp_path: Path) -> Run:
    mask = np.ones((60, 70), dtype=bool)
    mask[:10, :10] = False
    return prepare(make_raster(60, 70, bands=2, mask=mask), tmp_path, scale=2, tile=24)


def assert_clean(run: Run, destination_content: bytes | None = None) -> None:
    if destination_content is None:
        assert not run.destination.exists()
        assert list(run.destination.parent.iterdir()) == []
    else:
        assert run.destination.read_bytes() == destination_content
        assert [p.name for p in run.destination.parent.iterdir()] == ["sr.tif"]
    assert list(run.scratch.iterdir()) == []


def test_stitching_on_several_threads_writes_what_one_thread_writes(tmp_path: Path, make_raster) -> None:
    """Tiles finish out of order and their cores (29 × 2 = 58 px) straddle the 512-px blocks."""
    mask = np.ones((300, 280), dtype=bool)
    mask[50:61, 7:90] = False
    run = prepare(make_raster(300, 280, bands=3, mask=mask), tmp_path, scale=2, tile=29)
    outputs = []
    for threads in (1, 4):
        destination = run.destination.with_name(f"sr{threads}.tif")
        export_cog(run.store, destination, run.scratch, threads=threads)
        with rasterio.open(destination) as ds:
            outputs.append((ds.read(), ds.read_masks(), ds.overviews(1), ds.read(1, out_shape=(300, 280))))
    (values, masks, overviews, coarse), parallel = outputs
    assert overviews == parallel[2] == [2]
    assert np.array_equal(values, parallel[0]) and np.array_equal(masks, parallel[1])
    assert np.array_equal(coarse, parallel[3])
    assert (masks[:, 100:122, 14:180] == 0).all() and masks.mean() > 200


@pytest.mark.parametrize(("height", "width", "factors"), [
    (512, 512, []), (513, 100, [2]), (560, 600, [2]), (1024, 1025, [2, 4]), (3072, 3072, [2, 4, 8]),
    (43920, 43920, [2, 4, 8, 16, 32, 64, 128]),
])
def test_overviews_halve_until_the_coarsest_fits_one_block(height: int, width: int, factors: list[int]) -> None:
    assert overview_factors(height, width, block=512) == factors


def test_store_without_output_fails_and_leaves_nothing(ready: Run) -> None:
    del TileStore.open(ready.url).group["output"]
    with pytest.raises(KeyError):
        export_cog(TileStore.open(ready.url, mode="r"), ready.destination, ready.scratch, threads=1)
    assert_clean(ready)


def test_failure_while_stitching_leaves_nothing(ready: Run) -> None:
    stitched: list[int] = []

    def fail_on_third_tile(tile_id: int) -> None:
        stitched.append(tile_id)
        if len(stitched) == 3:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        export_cog(ready.store, ready.destination, ready.scratch, threads=1, on_tile=fail_on_third_tile)
    assert len(stitched) == 3
    assert_clean(ready)


def test_failure_while_writing_the_cog_leaves_nothing(ready: Run, monkeypatch) -> None:
    real_copy = rasterio.shutil.copy

    def copy_then_fail(src, dst, **kwargs):
        real_copy(src, dst, **kwargs)  # the partial COG is complete on disk ...
        assert Path(dst).exists() and Path(dst).name.endswith(".partial")
        raise OSError("killed")  # ... but the rename never happens

    monkeypatch.setattr(rasterio.shutil, "copy", copy_then_fail)
    with pytest.raises(OSError, match="killed"):
        export_cog(ready.store, ready.destination, ready.scratch, threads=1)
    assert_clean(ready)


def test_failed_export_keeps_an_existing_destination(ready: Run) -> None:
    ready.destination.write_bytes(b"previous result")

    def fail(_: int) -> None:
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError):
        export_cog(ready.store, ready.destination, ready.scratch, threads=1, on_tile=fail)
    assert_clean(ready, b"previous result")
    # And a successful export replaces it whole.
    export_cog(ready.store, ready.destination, ready.scratch, threads=1)
    with rasterio.open(ready.destination) as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
    assert [p.name for p in ready.destination.parent.iterdir()] == ["sr.tif"]
    assert list(ready.scratch.iterdir()) == []


# -- to_dtype ----------------------------------------------------------------------------------------


def test_to_dtype_rounds_clips_and_keeps_valid_pixels_off_nodata() -> None:
    values = np.array([[[-3.2, 0.4, 0.6, 1.5, 254.6, 300.0]]], dtype=np.float32)
    valid = np.array([[True, True, True, True, True, False]])
    np.testing.assert_array_equal(to_dtype(values, valid, "uint8", None), [[[0, 0, 1, 2, 255, 255]]])
    np.testing.assert_array_equal(to_dtype(values, valid, "uint8", 0), [[[1, 1, 1, 2, 255, 0]]])
    np.testing.assert_array_equal(to_dtype(values, valid, "uint8", 255), [[[0, 0, 1, 2, 254, 255]]])
    np.testing.assert_array_equal(to_dtype(values, valid, "int16", 2), [[[-3, 0, 1, 3, 255, 2]]])
    out = to_dtype(values, valid, "float32", -9999.0)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, np.array([[[-3.2, 0.4, 0.6, 1.5, 254.6, -9999.0]]], dtype=np.float32))
    # float without nodata: holes are NaN, as the input's undeclared NaNs were
    np.testing.assert_array_equal(to_dtype(values, valid, "float32", None),
                                  np.array([[[-3.2, 0.4, 0.6, 1.5, 254.6, np.nan]]], dtype=np.float32))


@pytest.mark.parametrize(("dtype", "nodata"), [("uint8", 0), ("uint16", None), ("int16", 2), ("float32", None)])
def test_to_dtype_into_reused_buffers_gives_the_same_pixels(dtype: str, nodata: float | None) -> None:
    """Export converts each tile into per-thread buffers, rounding its float copy in place; without
    them the caller's array stays as it was."""
    values = np.random.default_rng(3).normal(100, 80, (2, 5, 7)).astype(np.float32)
    valid = np.random.default_rng(4).random((5, 7)) > 0.2
    kept = values.copy()
    expected = to_dtype(values, valid, dtype, nodata)
    np.testing.assert_array_equal(values, kept)
    out = np.full(values.shape, 7, dtype)
    assert to_dtype(values, valid, dtype, nodata, out=out) is out
    np.testing.assert_array_equal(out, expected)


def test_zstd_writes_the_same_cog_as_deflate(tmp_path: Path, make_raster) -> None:
    """The codec is a setting because it changes only the bytes: same pixels, masks and overviews."""
    mask = np.ones((150, 140), dtype=bool)
    mask[20:31, 7:90] = False
    run = prepare(make_raster(150, 140, bands=3, mask=mask), tmp_path, scale=4, tile=64)
    outputs = []
    for compression in COMPRESSIONS:
        destination = run.destination.with_name(f"sr_{compression}.tif")
        export_cog(run.store, destination, run.scratch, threads=2, compression=compression)
        with rasterio.open(destination) as ds:
            assert ds.compression.name.lower() == compression
            assert ds.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG" and ds.overviews(1) == [2]
            outputs.append((ds.read(), ds.read_masks(), ds.read(out_shape=(3, 300, 280)), ds.profile["blockxsize"]))
    for first, other in zip(*outputs, strict=True):
        assert np.array_equal(first, other)


def test_unknown_compression_is_refused_before_anything_is_written(tmp_path: Path, make_raster) -> None:
    run = prepare(make_raster(40, 40, bands=1), tmp_path, scale=2, tile=32)
    with pytest.raises(InvalidRequestError, match="compression 'jpeg' is not one of deflate, zstd"):
        export_cog(run.store, run.destination, run.scratch, compression="jpeg")
    assert not run.destination.exists() and list(run.scratch.iterdir()) == []
